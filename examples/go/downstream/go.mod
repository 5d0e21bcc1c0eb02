module example.com/gqa-downstream

go 1.19

require github.com/libgqa/libgqa/examples/go v0.0.0

// The checkout stands in for the published module (scripts/callers/run_all.sh has no network).
replace github.com/libgqa/libgqa/examples/go => ../
