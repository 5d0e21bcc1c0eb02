// version.hpp: the library and ABI versions of this build (from gqa.h).
#pragma once

#include <cstdint>

namespace gqa {

const char* version_string();  // "MAJOR.MINOR.PATCH"
uint32_t version_number();     // MAJOR*10000 + MINOR*100 + PATCH
uint32_t abi_version();

}  // namespace gqa
