// Command otherflags is a test plugin the test builds with the opposite
// -race setting of the test binary: loading it must fail with a hint.
package main

func main() {}
