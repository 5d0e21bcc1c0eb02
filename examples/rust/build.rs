// Links libgqa. GQA_LIB_DIR names the folder holding libgqa.so (e.g. PREFIX/lib of
// `cmake --install`); without it the system's library path is searched.
fn main() {
    println!("cargo:rerun-if-env-changed=GQA_LIB_DIR");
    if let Ok(dir) = std::env::var("GQA_LIB_DIR") {
        println!("cargo:rustc-link-search=native={dir}");
        // Tests and binaries find the library at run time without LD_LIBRARY_PATH.
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    println!("cargo:rustc-link-lib=dylib=gqa");
}
