# Per-ISA compile flags for the CPU kernels. Each src/cpu/*_<isa>.cpp file is compiled for that
# ISA only and is called only after a run-time CPU feature check (src/cpu/isa.cpp; for AMX also
# the OS's grant of tile state), so the library as a whole still runs on any x86-64 (no
# -march=native in a distributed build). Each set must match its run-time check in isa.cpp.
function(gqa_cpu_isa_flags target)
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
    set(avx512 "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mfma;-mf16c;-mavx2")
    get_target_property(sources ${target} SOURCES)
    foreach(src IN LISTS sources)
      if(src MATCHES "_amx_bf16\\.cpp$")
        set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS "${avx512};-mavx512bf16;-mamx-tile;-mamx-bf16")
      elseif(src MATCHES "_avx512_bf16\\.cpp$")
        set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS "${avx512};-mavx512bf16")
      elseif(src MATCHES "_avx512\\.cpp$")
        set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS "${avx512}")
      elseif(src MATCHES "_avx2\\.cpp$")
        set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
      endif()
    endforeach()
  endif()
endfunction()
