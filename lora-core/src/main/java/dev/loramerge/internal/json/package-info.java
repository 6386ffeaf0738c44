/** JSON for recipes, model configs and metadata, without a data binding library. Not an API. */
package dev.loramerge.internal.json;
