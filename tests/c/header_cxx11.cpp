// header_cxx11.cpp: gqa.h compiles as C++11 (-std=c++11 -Wall -Wextra -pedantic -Werror).
#include "gqa.h"

int main() {
    gqa_prefill_config p = GQA_PREFILL_CONFIG_INIT;
    gqa_decode_config d = GQA_DECODE_CONFIG_INIT;
    gqa_batch_config b = GQA_BATCH_CONFIG_INIT;
    static_assert(sizeof(gqa_prefill_config) % 4 == 0, "config is a whole number of 4-byte fields");
    return (p.abi_version == GQA_ABI_VERSION && d.struct_size == sizeof d && b.causal == 1) ? 0 : 1;
}
