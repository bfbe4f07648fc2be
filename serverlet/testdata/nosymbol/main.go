// Command nosymbol is a test plugin that exports no constructor.
package main

// Make is not the New the loader looks for.
func Make() {}

func main() {}
