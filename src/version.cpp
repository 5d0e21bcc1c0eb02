// version.cpp: the library and ABI versions of this build (from gqa.h).
#include "version.hpp"

#include "gqa.h"

#define GQA_STR2(x) #x
#define GQA_STR(x) GQA_STR2(x)

namespace gqa {

const char* version_string() {
    return GQA_STR(GQA_VERSION_MAJOR) "." GQA_STR(GQA_VERSION_MINOR) "." GQA_STR(GQA_VERSION_PATCH);
}
uint32_t version_number() { return GQA_VERSION_MAJOR * 10000u + GQA_VERSION_MINOR * 100u + GQA_VERSION_PATCH; }
uint32_t abi_version() { return GQA_ABI_VERSION; }

}  // namespace gqa
