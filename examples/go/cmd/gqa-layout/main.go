// Command gqa-layout prints the config structs' layout as Go sees it (JSON on stdout).
package main

import (
	"fmt"

	"github.com/libgqa/libgqa/examples/go/gqa"
)

func main() { fmt.Println(gqa.LayoutJSON()) }
