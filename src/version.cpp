// version.cpp: library and ABI version queries.
#include "gqa.h"

#define GQA_STR2(x) #x
#define GQA_STR(x) GQA_STR2(x)

extern "C" GQA_API const char* gqa_version_string(void) {
    return GQA_STR(GQA_VERSION_MAJOR) "." GQA_STR(GQA_VERSION_MINOR) "." GQA_STR(GQA_VERSION_PATCH);
}
extern "C" GQA_API uint32_t gqa_version_number(void) {
    return GQA_VERSION_MAJOR * 10000u + GQA_VERSION_MINOR * 100u + GQA_VERSION_PATCH;
}
extern "C" GQA_API uint32_t gqa_abi_version(void) { return GQA_ABI_VERSION; }
