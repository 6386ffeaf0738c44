/** The top-k magnitude select every pruning of the library uses. Not an API: exported only to the loramerge modules that use it (see module-info). */
package dev.loramerge.internal.select;
