// error.cpp: status strings, the thread-local last error, message formatting.
#include "error.hpp"

#include <cstdio>
#include <vector>

namespace gqa {

namespace {
thread_local std::string t_last_error;

std::string vformat(const char* fmt, va_list args) {
    va_list copy;
    va_copy(copy, args);
    int n = std::vsnprintf(nullptr, 0, fmt, copy);
    va_end(copy);
    if (n <= 0) return std::string();
    std::vector<char> buf(static_cast<size_t>(n) + 1);
    std::vsnprintf(buf.data(), buf.size(), fmt, args);
    return std::string(buf.data(), static_cast<size_t>(n));
}
}  // namespace

std::string format(const char* fmt, ...) {
    va_list args;
    va_start(args, fmt);
    std::string s = vformat(fmt, args);
    va_end(args);
    return s;
}

void fail(gqa_status status, const char* fmt, ...) {
    va_list args;
    va_start(args, fmt);
    std::string s = vformat(fmt, args);
    va_end(args);
    throw Error(status, s);
}

void set_last_error(const std::string& message) { t_last_error = message; }
void clear_last_error() { t_last_error.clear(); }
const char* last_error() { return t_last_error.c_str(); }

const char* status_string(gqa_status status) {
    switch (status) {
        case GQA_STATUS_OK: return "ok";
        case GQA_STATUS_INVALID_ARGUMENT: return "invalid argument";
        case GQA_STATUS_CACHE_OVERFLOW: return "cache overflow";
        case GQA_STATUS_UNSUPPORTED: return "unsupported";
        case GQA_STATUS_DEVICE_UNAVAILABLE: return "device unavailable";
        case GQA_STATUS_CUDA_ERROR: return "CUDA error";
        case GQA_STATUS_VERSION_MISMATCH: return "version mismatch";
        case GQA_STATUS_OUT_OF_MEMORY: return "out of memory";
        case GQA_STATUS_INTERNAL_ERROR: return "internal error";
    }
    return "unknown status";
}

}  // namespace gqa

