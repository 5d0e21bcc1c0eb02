/* fuzz_replay.c: runs the fuzz harness over files (the corpus) without libFuzzer, so ctest
 * checks every seed and reproducer against the oracle on each build (fuzz.sh fuzzes). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

static int replay_file(const char* path) {
    FILE* f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fuzz_replay: cannot open %s\n", path);
        return 1;
    }
    uint8_t data[4096];
    const size_t n = fread(data, 1, sizeof data, f);
    fclose(f);
    LLVMFuzzerTestOneInput(data, n); /* a violation aborts, naming the call */
    return 0;
}

int main(int argc, char** argv) {
    int files = 0, failed = 0;
    for (int i = 1; i < argc; ++i) {
        struct stat st;
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
            DIR* dir = opendir(argv[i]);
            for (struct dirent* e; dir && (e = readdir(dir));) {
                if (e->d_name[0] == '.') continue;
                char path[4096];
                snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
                failed += replay_file(path);
                ++files;
            }
            if (dir) closedir(dir);
        } else {
            failed += replay_file(argv[i]);
            ++files;
        }
    }
    static const char* const ops[kOpCount] = {"prefill", "decode", "batch", "merge"};
    for (int op = 0; op < kOpCount; ++op) {
        fprintf(stderr, "fuzz_replay: %-7s %ld calls, %ld accepted\n", ops[op], fuzz_calls[op], fuzz_accepted[op]);
    }
    fprintf(stderr, "fuzz_replay: %d inputs, %d unreadable, no oracle violation\n", files, failed);
    return failed || files == 0 ? 1 : 0;
}
