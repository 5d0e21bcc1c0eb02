//! Loads libgqa with dlopen and resolves its functions once, for `ffi.rs`.
use std::ffi::{c_char, c_int, c_void, CStr, CString};

#[link(name = "dl")]
extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *const c_char;
}
const RTLD_NOW: c_int = 2;

/// The libgqa.so this crate was built against (found by build.rs), unless GQA_LIBRARY names
/// another one at run time.
pub fn library_path() -> String {
    match std::env::var("GQA_LIBRARY") {
        Ok(path) if !path.is_empty() => path,
        _ => env!("GQA_LIBRARY_PATH").to_string(),
    }
}

fn last_dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated message owned by libc.
    let text = unsafe { dlerror() };
    if text.is_null() {
        "unknown error".into()
    } else {
        unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
    }
}

/// The dlopen handle of libgqa, or a panic that says how to point at the library.
pub fn handle() -> *mut c_void {
    let path = library_path();
    let name = CString::new(path.clone()).expect("GQA_LIBRARY holds a NUL byte");
    // SAFETY: a NUL-terminated path; libgqa's initialisers have no preconditions.
    let handle = unsafe { dlopen(name.as_ptr(), RTLD_NOW) };
    if handle.is_null() {
        panic!("gqa: cannot load libgqa from {path} ({}); set GQA_LIBRARY to the path of libgqa.so, \
                or rebuild with GQA_LIB_DIR set to the folder that holds it", last_dl_error());
    }
    handle
}

/// The address of `symbol` (NUL-terminated) in libgqa, or a panic naming it.
pub fn symbol(handle: *mut c_void, symbol: &str) -> *mut c_void {
    let name = CStr::from_bytes_with_nul(symbol.as_bytes()).expect("a NUL-terminated symbol name");
    // SAFETY: handle came from dlopen; name is NUL-terminated.
    let address = unsafe { dlsym(handle, name.as_ptr()) };
    if address.is_null() {
        panic!("gqa: {} has no {} ({}): an older libgqa than these bindings need",
               library_path(), symbol.trim_end_matches('\0'), last_dl_error());
    }
    address
}

/// Declares libgqa's functions once: a table of function pointers resolved at the first call,
/// and for each one a `pub unsafe fn` of the same name and signature that calls through it.
macro_rules! libgqa_functions {
    ($(fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?;)*) => {
        #[allow(non_snake_case)]
        struct Functions {
            $($name: unsafe extern "C" fn($($ty),*) $(-> $ret)?,)*
        }

        fn functions() -> &'static Functions {
            static FUNCTIONS: std::sync::OnceLock<Functions> = std::sync::OnceLock::new();
            FUNCTIONS.get_or_init(|| {
                let handle = loader::handle();
                // SAFETY: each symbol is the libgqa function of that name, whose C signature
                // (include/gqa.h) is the one declared here.
                unsafe {
                    Functions {
                        $($name: std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($ty),*) $(-> $ret)?>(
                            loader::symbol(handle, concat!(stringify!($name), "\0"))),)*
                    }
                }
            })
        }

        $(
            /// The libgqa function of this name (see include/gqa.h).
            ///
            /// # Safety
            /// As for the C function: pointers must be valid for what the call reads and writes.
            pub unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
                (functions().$name)($($arg),*)
            }
        )*
    };
}
