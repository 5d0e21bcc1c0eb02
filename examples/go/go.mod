module libgqa.example/gqa

go 1.19
