// Command wrongtype is a test plugin whose New has the wrong type.
package main

// New takes no arguments: the loader refuses it.
func New() string { return "not a serverlet" }

func main() {}
