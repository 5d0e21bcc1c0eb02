/* header_c99.c: gqa.h compiles as strict C99 (-std=c99 -Wall -Wextra -pedantic -Werror). */
#include "gqa.h"

int main(void) {
    gqa_prefill_config p = GQA_PREFILL_CONFIG_INIT;
    gqa_decode_config d = GQA_DECODE_CONFIG_INIT;
    gqa_batch_config b = GQA_BATCH_CONFIG_INIT;
    return (p.abi_version == GQA_ABI_VERSION && d.struct_size == sizeof d && b.window_left == -1 &&
            b.error_flags == NULL && gqa_abi_version() == GQA_ABI_VERSION)
               ? 0 : 1;
}
