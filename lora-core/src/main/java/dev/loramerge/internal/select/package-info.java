/** The top-k magnitude select every pruning of the library uses. Not an API. */
package dev.loramerge.internal.select;
