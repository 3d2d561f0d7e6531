// Package codeshape holds tests of the repository's own shape (issue 11):
// no non-test function over 60 lines. It has no code of its own.
package codeshape
