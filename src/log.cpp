// log.cpp: the log level (GQA_LOG_LEVEL or gqa_set_log_level) and the sink (callback or stderr).
#include "log.hpp"

#include <pthread.h>

#include <atomic>
#include <cctype>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "error.hpp"
#include "gqa.h"

namespace gqa {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Parses "DEBUG", "info", "30", ... (surrounding whitespace ignored: a value from a YAML or
// .env file often carries a trailing space); returns -1 when the text is not a level.
int32_t parse_level(const char* text) {
    const char* first = text;
    while (is_space(*first)) ++first;
    const char* last = first + std::strlen(first);
    while (last > first && is_space(last[-1])) --last;
    const std::string word(first, last);
    if (word.empty()) return -1;
    char* end = nullptr;
    const long n = std::strtol(word.c_str(), &end, 10);
    if (*end == '\0') return (n >= 0 && n <= GQA_LOG_OFF) ? static_cast<int32_t>(n) : -1;
    std::string upper;
    for (char c : word) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (upper == "DEBUG") return GQA_LOG_DEBUG;
    if (upper == "INFO") return GQA_LOG_INFO;
    if (upper == "WARNING" || upper == "WARN") return GQA_LOG_WARNING;
    if (upper == "ERROR") return GQA_LOG_ERROR;
    if (upper == "OFF" || upper == "NONE") return GQA_LOG_OFF;
    return -1;
}

// True when GQA_LOG_LEVEL holds something other than whitespace.
bool is_set(const char* text) {
    if (!text) return false;
    while (is_space(*text)) ++text;
    return *text != '\0';
}

struct LogState {
    std::atomic<int32_t> level;
    std::mutex mutex;  // guards callback + user_data
    gqa_log_callback callback = nullptr;
    void* user_data = nullptr;
    std::string bad_env;              // GQA_LOG_LEVEL when it is not a level, else empty
    std::atomic<bool> warned{false};  // the warning about bad_env was delivered

    LogState();
};

// fork() while another thread holds the mutex would leave it locked forever in the child:
// the forking thread takes it first (it is never held across a callback, so this cannot wait
// on user code) and releases it on both sides.
void lock_for_fork();
void unlock_after_fork();

LogState::LogState() {
    const char* env = std::getenv("GQA_LOG_LEVEL");
    const int32_t parsed = parse_level(env ? env : "");
    if (is_set(env) && parsed < 0) bad_env = env;
    level.store(parsed >= 0 ? parsed : GQA_LOG_WARNING);
    pthread_atfork(&lock_for_fork, &unlock_after_fork, &unlock_after_fork);
}

// The state itself; constructing it must not log (logging reads the state).
LogState& raw_state() {
    static LogState* s = new LogState();  // never destroyed: usable from any static destructor
    return *s;
}

void lock_for_fork() { raw_state().mutex.lock(); }
void unlock_after_fork() { raw_state().mutex.unlock(); }

// The state, after warning once about a bad GQA_LOG_LEVEL. The warning is logged outside any
// lock or once-flag: log_message() comes back here, finds `warned` set and goes on.
LogState& state() {
    LogState& s = raw_state();
    if (!s.bad_env.empty() && !s.warned.load(std::memory_order_acquire) && !s.warned.exchange(true)) {
        log_message(GQA_LOG_WARNING, "GQA_LOG_LEVEL='%s' is not a level (DEBUG, INFO, WARNING, ERROR, OFF "
                    "or 0..100); using WARNING", s.bad_env.c_str());
    }
    return s;
}

const char* level_name(int32_t level) {
    if (level >= GQA_LOG_ERROR) return "ERROR";
    if (level >= GQA_LOG_WARNING) return "WARNING";
    if (level >= GQA_LOG_INFO) return "INFO";
    return "DEBUG";
}

}  // namespace

void set_log_level(int32_t level) {
    if (level < 0 || level > GQA_LOG_OFF) {
        fail(GQA_STATUS_INVALID_ARGUMENT, "level (%d) must be between 0 and GQA_LOG_OFF (%d)", level, GQA_LOG_OFF);
    }
    state().level.store(level);
}

int32_t log_level() { return state().level.load(); }

void set_log_callback(gqa_log_callback callback, void* user_data) {
    LogState& s = raw_state();
    {
        std::lock_guard<std::mutex> lock(s.mutex);
        s.callback = callback;
        s.user_data = callback ? user_data : nullptr;
    }
    state();  // a pending GQA_LOG_LEVEL warning goes to the new callback (Python: its logger)
}

bool log_enabled(int32_t level) { return level >= state().level.load(std::memory_order_relaxed); }

void log_message(int32_t level, const char* fmt, ...) {
    LogState& s = state();
    if (level < s.level.load(std::memory_order_relaxed)) return;
    char buf[1024];
    va_list args;
    va_start(args, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, args);
    va_end(args);
    gqa_log_callback callback;
    void* user_data;
    {
        std::lock_guard<std::mutex> lock(s.mutex);
        callback = s.callback;
        user_data = s.user_data;
    }
    // Called outside the lock so that a callback may itself call into libgqa.
    if (callback) {
        callback(level, buf, user_data);
    } else {
        std::fprintf(stderr, "[gqa %s] %s\n", level_name(level), buf);
    }
}

}  // namespace gqa
