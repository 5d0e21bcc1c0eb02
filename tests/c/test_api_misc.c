/* test_api_misc.c: version, status strings, the log level and callback, thread count, CUDA
 * availability and the config initializers. */
#include "gqa_test.h"

static int g_debug_messages = 0;
static int g_saw_backend = 0;

static void on_log(int32_t level, const char* message, void* user_data) {
    int* calls = (int*)user_data;
    ++*calls;
    if (level == GQA_LOG_DEBUG) ++g_debug_messages;
    if (strstr(message, "backend=cpu") && strstr(message, "num_q_heads=4")) g_saw_backend = 1;
}

int main(void) {
    /* Version */
    CHECK(gqa_abi_version() == GQA_ABI_VERSION, "abi %u", gqa_abi_version());
    CHECK(gqa_version_number() == GQA_VERSION_MAJOR * 10000u + GQA_VERSION_MINOR * 100u + GQA_VERSION_PATCH,
          "version number %u", gqa_version_number());
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", GQA_VERSION_MAJOR, GQA_VERSION_MINOR, GQA_VERSION_PATCH);
    CHECK(strcmp(gqa_version_string(), expected) == 0, "version string %s", gqa_version_string());

    /* Status strings: pinned values, never NULL */
    CHECK(GQA_STATUS_OK == 0 && GQA_STATUS_INVALID_ARGUMENT == 1 && GQA_STATUS_CACHE_OVERFLOW == 2 &&
              GQA_STATUS_UNSUPPORTED == 3 && GQA_STATUS_DEVICE_UNAVAILABLE == 4 && GQA_STATUS_CUDA_ERROR == 5 &&
              GQA_STATUS_VERSION_MISMATCH == 6 && GQA_STATUS_OUT_OF_MEMORY == 7 && GQA_STATUS_INTERNAL_ERROR == 8,
          "status values changed");
    for (int s = 0; s <= 9; ++s) CHECK(gqa_status_string((gqa_status)s) != NULL, "NULL string for %d", s);
    CHECK(strcmp(gqa_status_string(GQA_STATUS_CACHE_OVERFLOW), "cache overflow") == 0, "string");

    /* Initializer functions and macros agree: the sized form on the whole struct, the plain
     * form on the ABI-1 bytes it writes (with the ABI-1 struct_size, 56 / 72) */
    gqa_prefill_config a = GQA_PREFILL_CONFIG_INIT, b;
    memset(&b, 0x7f, sizeof b);
    CHECK(gqa_prefill_config_init_sized(&b, sizeof b) == GQA_STATUS_OK, "sized prefill init");
    CHECK(memcmp(&a, &b, sizeof a) == 0, "prefill init differs from macro");
    CHECK(a.struct_size == sizeof(gqa_prefill_config) && a.causal == 1 && a.dtype == GQA_DTYPE_F16, "defaults");
    CHECK(a.window_left == -1 && a.window_right == -1 && a.softcap == 0.0f && !a.sinks && !a.lse, "variant defaults");
    memset(&b, 0x7f, sizeof b);
    gqa_prefill_config_init(&b);
    CHECK(b.struct_size == 56 && memcmp((char*)&a + 4, (char*)&b + 4, 52) == 0, "plain prefill init");
    CHECK(gqa_prefill_config_init_sized(&b, 57) == GQA_STATUS_VERSION_MISMATCH && b.struct_size == 56,
          "unpublished size: %s", gqa_last_error());
    gqa_decode_config c = GQA_DECODE_CONFIG_INIT, d;
    memset(&d, 0x7f, sizeof d);
    CHECK(gqa_decode_config_init_sized(&d, sizeof d) == GQA_STATUS_OK, "sized decode init");
    CHECK(memcmp(&c, &d, sizeof c) == 0, "decode init differs from macro");
    memset(&d, 0x7f, sizeof d);
    gqa_decode_config_init(&d);
    CHECK(d.struct_size == 72 && memcmp((char*)&c + 4, (char*)&d + 4, 68) == 0, "plain decode init");
    gqa_merge_config e = GQA_MERGE_CONFIG_INIT, f;
    memset(&f, 0x7f, sizeof f);
    CHECK(gqa_merge_config_init_sized(&f, sizeof f) == GQA_STATUS_OK, "sized merge init: %s", gqa_last_error());
    CHECK(memcmp(&e, &f, sizeof e) == 0, "merge init differs from macro");
    memset(&f, 0x7f, sizeof f);
    CHECK(gqa_merge_config_init_sized(&f, 12) == GQA_STATUS_VERSION_MISMATCH && f.struct_size == 0x7f7f7f7fu,
          "unpublished merge size: %s", gqa_last_error());
    CHECK(strstr(gqa_last_error(), "struct_size (12)") != NULL, "message: %s", gqa_last_error());
    CHECK(gqa_merge_config_init_sized(NULL, sizeof f) == GQA_STATUS_INVALID_ARGUMENT, "NULL merge config");

    /* Logging: level bounds, callback receives DEBUG call descriptions */
    CHECK(gqa_set_log_level(-1) == GQA_STATUS_INVALID_ARGUMENT, "negative level accepted");
    CHECK(strstr(gqa_last_error(), "level (-1)") != NULL, "message: %s", gqa_last_error());
    int calls = 0;
    CHECK(gqa_set_log_callback(on_log, &calls) == GQA_STATUS_OK, "set callback");
    CHECK(gqa_set_log_level(GQA_LOG_DEBUG) == GQA_STATUS_OK && gqa_get_log_level() == GQA_LOG_DEBUG, "level");
    float q[2 * 4 * 8], k[2 * 2 * 8], v[2 * 2 * 8], out[2 * 4 * 8];
    fill_random(GQA_DTYPE_F32, q, 64);
    fill_random(GQA_DTYPE_F32, k, 32);
    fill_random(GQA_DTYPE_F32, v, 32);
    gqa_prefill_config p = GQA_PREFILL_CONFIG_INIT;
    p.dtype = GQA_DTYPE_F32; p.batch_size = 1; p.seq_len = 2; p.num_q_heads = 4; p.num_kv_heads = 2;
    p.head_dim = 8;
    CHECK(gqa_attention_prefill(out, q, k, v, NULL, NULL, &p, NULL) == GQA_STATUS_OK, "%s", gqa_last_error());
    CHECK(calls > 0 && g_debug_messages > 0 && g_saw_backend, "callback calls %d, debug %d, backend %d", calls,
          g_debug_messages, g_saw_backend);
    int before = calls;
    CHECK(gqa_set_log_level(GQA_LOG_OFF) == GQA_STATUS_OK, "off");
    CHECK(gqa_attention_prefill(out, q, k, v, NULL, NULL, &p, NULL) == GQA_STATUS_OK, "%s", gqa_last_error());
    CHECK(calls == before, "messages delivered while OFF");
    CHECK(gqa_set_log_callback(NULL, NULL) == GQA_STATUS_OK, "reset callback");
    gqa_set_log_level(GQA_LOG_WARNING);

    /* Threads */
    CHECK(gqa_get_num_threads() >= 1, "threads %d", gqa_get_num_threads());
    CHECK(gqa_set_num_threads(3) == GQA_STATUS_OK && gqa_get_num_threads() == 3, "set 3");
    CHECK(gqa_set_num_threads(-2) == GQA_STATUS_INVALID_ARGUMENT, "negative threads accepted");
    CHECK(strstr(gqa_last_error(), "num_threads (-2)") != NULL, "%s", gqa_last_error());
    CHECK(gqa_set_num_threads(0) == GQA_STATUS_OK && gqa_get_num_threads() >= 1, "auto");

    /* CUDA availability is a status, never a crash; without CUDA it explains why. */
    gqa_status cuda = gqa_cuda_available();
    CHECK(cuda == GQA_STATUS_OK || cuda == GQA_STATUS_DEVICE_UNAVAILABLE, "cuda status %d", (int)cuda);
    if (cuda != GQA_STATUS_OK) CHECK(strlen(gqa_last_error()) > 10, "no reason given");
    if (!gqa_built_with_cuda()) CHECK(cuda == GQA_STATUS_DEVICE_UNAVAILABLE, "no CUDA build but available");

    /* Workspace size: 0 on the CPU; NULL arguments rejected. */
    gqa_decode_config dc = GQA_DECODE_CONFIG_INIT;
    dc.batch_size = 1; dc.num_q_heads = 4; dc.num_kv_heads = 2; dc.head_dim = 64; dc.max_seq_len = 16;
    uint64_t bytes = 123;
    CHECK(gqa_decode_workspace_size(&dc, &bytes) == GQA_STATUS_OK && bytes == 0, "cpu workspace %llu",
          (unsigned long long)bytes);
    CHECK(gqa_decode_workspace_size(&dc, NULL) == GQA_STATUS_INVALID_ARGUMENT, "NULL bytes");
    CHECK(gqa_decode_workspace_size(NULL, &bytes) == GQA_STATUS_INVALID_ARGUMENT, "NULL config");
    return test_summary("test_api_misc");
}
