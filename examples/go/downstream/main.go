// Command downstream is a program outside the gqa module that imports it by its module path,
// as a user's would; scripts/callers/run_all.sh builds it against a pip install.
package main

import (
	"fmt"
	"math"
	"os"

	"github.com/libgqa/libgqa/examples/go/gqa"
)

func main() {
	q := make([]float32, 3*4*16)
	k := make([]float32, 3*2*16)
	for i := range q {
		q[i] = float32(math.Sin(float64(i) * 0.37))
	}
	for i := range k {
		k[i] = float32(math.Cos(float64(i) * 0.11))
	}
	out := make([]float32, len(q))
	err := gqa.Prefill(out, q, k, k, nil, nil, gqa.PrefillParams{BatchSize: 1, SeqLen: 3, NumQHeads: 4,
		NumKVHeads: 2, HeadDim: 16})
	if err != nil {
		fmt.Fprintln(os.Stderr, "downstream:", err)
		os.Exit(1)
	}
	fmt.Printf("downstream: libgqa %s, prefill ok\n", gqa.Version())
}
