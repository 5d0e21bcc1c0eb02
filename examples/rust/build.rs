// Finds libgqa.so and compiles its path into the crate, which loads it at the first call
// (src/ffi/loader.rs), so binaries that depend on this crate need no rpath or LD_LIBRARY_PATH.
// Where it looks, in order:
//   1. GQA_LIB_DIR: the folder holding libgqa.so (e.g. PREFIX/lib of `cmake --install`);
//   2. pkg-config: `pkg-config --variable=libdir gqa` (PKG_CONFIG_PATH=PREFIX/lib/pkgconfig,
//      or the folder `python -m gqa --pkg-config-path` prints for a pip install);
//   3. a pip install of libgqa: `$GQA_PYTHON -m gqa --library` (GQA_PYTHON defaults to python3).
use std::path::PathBuf;
use std::process::Command;

const LIBRARY: &str = "libgqa.so";

fn main() {
    for var in ["GQA_LIB_DIR", "PKG_CONFIG_PATH", "GQA_PYTHON"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let library = match std::env::var("GQA_LIB_DIR") {
        Ok(dir) if !dir.is_empty() => in_dir(&dir).unwrap_or_else(|| {
            fail(&format!("GQA_LIB_DIR={dir} has no {LIBRARY}; point it at the folder that holds libgqa.so \
                           (PREFIX/lib after `cmake --install build --prefix PREFIX`)"))
        }),
        _ => from_pkg_config().or_else(from_pip).unwrap_or_else(|| {
            fail("cannot find libgqa.so. Set GQA_LIB_DIR to the folder that holds it (PREFIX/lib after \
                  `cmake --install build --prefix PREFIX`), or PKG_CONFIG_PATH so that `pkg-config gqa` finds \
                  it, or `pip install libgqa` into the python3 on PATH (or the one GQA_PYTHON names)")
        }),
    };
    println!("cargo:rerun-if-changed={}", library.display());
    println!("cargo:rustc-env=GQA_LIBRARY_PATH={}", library.display());
}

fn in_dir(dir: &str) -> Option<PathBuf> {
    let path = PathBuf::from(dir).join(LIBRARY);
    path.is_file().then(|| path.canonicalize().unwrap_or(path))
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn from_pkg_config() -> Option<PathBuf> {
    in_dir(&output("pkg-config", &["--variable=libdir", "gqa"])?)
}

fn from_pip() -> Option<PathBuf> {
    let python = std::env::var("GQA_PYTHON").unwrap_or_else(|_| "python3".into());
    let path = PathBuf::from(output(&python, &["-m", "gqa", "--library"])?);
    path.is_file().then_some(path)
}

fn fail(sentence: &str) -> ! {
    eprintln!("error: gqa: {sentence}");
    std::process::exit(1);
}
