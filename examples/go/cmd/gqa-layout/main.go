// Command gqa-layout prints the config structs' layout as Go sees it (JSON on stdout).
package main

import (
	"fmt"

	"libgqa.example/gqa"
)

func main() { fmt.Println(gqa.LayoutJSON()) }
