/** JSON for recipes, model configs and metadata, without a data binding library. Not an API: exported only to the loramerge modules that use it (see module-info). */
package dev.loramerge.internal.json;
