// log.hpp: leveled logging to a user callback (or stderr). Never stdout.
#pragma once

#include <cstdint>

#include "gqa.h"

namespace gqa {

// The state behind gqa_set_log_level(), gqa_get_log_level() and gqa_set_log_callback().
void set_log_level(int32_t level);  // INVALID_ARGUMENT outside 0 .. GQA_LOG_OFF
int32_t log_level();
void set_log_callback(gqa_log_callback callback, void* user_data);  // NULL: back to stderr

bool log_enabled(int32_t level);
// printf-style; formats only when the level is enabled (check log_enabled first in hot paths).
void log_message(int32_t level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace gqa

#define GQA_LOG(level, ...)                                 \
    do {                                                    \
        if (::gqa::log_enabled(level)) ::gqa::log_message(level, __VA_ARGS__); \
    } while (0)
