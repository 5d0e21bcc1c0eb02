/* fuzz_gqa.c: the libFuzzer entry point over every entry point that takes tensors. The first
 * byte picks the op: below 0xC0 prefill (even) or decode (odd), as in the inputs from before
 * libgqa 0.2, which keep their meaning; 0xC0..0xDF gqa_attention_batch; 0xE0..0xFF
 * gqa_merge_states. Each op's file decodes the rest and holds its oracle (see fuzz.h). Any
 * violation aborts with a message: libFuzzer then saves the input as a reproducer. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static int cuda_usable = -1;
    if (cuda_usable < 0) {
        gqa_set_log_level(GQA_LOG_OFF);
        gqa_set_num_threads(2);
        cuda_usable = gqa_cuda_available() == GQA_STATUS_OK;
    }
    reader r = {data, size};
    const uint8_t op = next_u8(&r);
    if (op < 0xC0) fuzz_attention(&r, op & 1, cuda_usable);
    else if (op < 0xE0) fuzz_batch(&r, cuda_usable);
    else fuzz_merge(&r, cuda_usable);
    return 0;
}
