module github.com/libgqa/libgqa/examples/go

go 1.19
