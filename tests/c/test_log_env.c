/* test_log_env.c: GQA_LOG_LEVEL is read once, at the first call, and no value of it may hang,
 * crash or be silently misread. Each value runs in a fresh child process (the level is
 * process-wide state) whose FIRST libgqa call is gqa_get_log_level(); an alarm kills a child
 * that hangs, which fails the test. A value that is not a level must give WARNING and exactly
 * one warning on stderr that names the value. */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gqa_test.h"

#define CHILD_SECONDS 10

typedef struct {
    const char* value;
    int32_t level;  /* expected gqa_get_log_level() */
    int warns;      /* expected warnings about GQA_LOG_LEVEL on stderr */
} env_case;

static const env_case k_cases[] = {
    {"nonsense", GQA_LOG_WARNING, 1}, {"verbose", GQA_LOG_WARNING, 1}, {"-5", GQA_LOG_WARNING, 1},
    {"1000", GQA_LOG_WARNING, 1},     {"101", GQA_LOG_WARNING, 1},     {"10x", GQA_LOG_WARNING, 1},
    {"DEBUG ", GQA_LOG_DEBUG, 0},     {" info\t", GQA_LOG_INFO, 0},    {"error", GQA_LOG_ERROR, 0},
    {"OFF", GQA_LOG_OFF, 0},          {"0", 0, 0},                     {"100", GQA_LOG_OFF, 0},
    {"", GQA_LOG_WARNING, 0},         {" ", GQA_LOG_WARNING, 0},
};

/* The child: its first libgqa call, under an alarm. Exit status 0 iff the level is right. */
static int child(int32_t expected) {
    alarm(CHILD_SECONDS);  /* default action: terminate, which the parent reports */
    const int32_t level = gqa_get_log_level();
    const int32_t again = gqa_get_log_level();  /* the warning is not repeated */
    if (level != expected || again != expected) {
        fprintf(stderr, "level %d then %d, expected %d\n", level, again, expected);
        return 1;
    }
    return 0;
}

/* Counts the lines of text that mention GQA_LOG_LEVEL. */
static int count_warnings(const char* text) {
    int n = 0;
    for (const char* at = strstr(text, "GQA_LOG_LEVEL"); at; at = strstr(at + 1, "GQA_LOG_LEVEL")) ++n;
    return n;
}

static void run_case(const char* self, const env_case* c) {
    int pipe_fds[2];
    if (pipe(pipe_fds) != 0) {
        CHECK(0, "pipe failed");
        return;
    }
    fflush(NULL);
    const pid_t pid = fork();
    if (pid == 0) {
        dup2(pipe_fds[1], STDERR_FILENO);
        close(pipe_fds[0]);
        close(pipe_fds[1]);
        setenv("GQA_LOG_LEVEL", c->value, 1);
        char expected[16];
        snprintf(expected, sizeof expected, "%d", c->level);
        execl(self, self, "--child", expected, (char*)NULL);
        _exit(127);
    }
    close(pipe_fds[1]);
    char text[4096];
    size_t used = 0;
    ssize_t got;
    while ((got = read(pipe_fds[0], text + used, sizeof text - 1 - used)) > 0) used += (size_t)got;
    text[used] = '\0';
    close(pipe_fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(!WIFSIGNALED(status), "GQA_LOG_LEVEL='%s': child killed by signal %d (%s); stderr: %s", c->value,
          WTERMSIG(status), WTERMSIG(status) == SIGALRM ? "hung" : "crashed", text);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "GQA_LOG_LEVEL='%s': child failed; stderr: %s",
          c->value, text);
    const int warns = count_warnings(text);
    CHECK(warns == c->warns, "GQA_LOG_LEVEL='%s': %d warnings, expected %d; stderr: %s", c->value, warns,
          c->warns, text);
    if (c->warns) CHECK(strstr(text, c->value) != NULL, "warning does not name '%s': %s", c->value, text);
}

int main(int argc, char** argv) {
    if (argc == 3 && strcmp(argv[1], "--child") == 0) return child((int32_t)atoi(argv[2]));
    for (size_t i = 0; i < sizeof k_cases / sizeof k_cases[0]; ++i) run_case("/proc/self/exe", &k_cases[i]);
    return test_summary("test_log_env");
}
