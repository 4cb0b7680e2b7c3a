/* spawn RESULT_PATH CMD [ARGS...]: run CMD, then write its rusage to RESULT_PATH.
 *
 * Why a separate launcher: on Linux a child's ru_maxrss starts from its parent's
 * high-water mark at fork (it is kept across exec), so a command forked straight
 * from the Python harness would report at least the harness's own RSS. Forked from
 * this tiny process instead, the number is the command's own.
 *
 * RESULT_PATH gets one line: "user_seconds sys_seconds maxrss_kib wait_status".
 * The exit status is the command's (128+signal if it was killed).
 */
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t child;

static void forward(int sig) {
    if (child > 0) kill(child, sig);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: spawn RESULT_PATH CMD [ARGS...]\n");
        return 125;
    }
    signal(SIGTERM, forward);
    signal(SIGINT, forward);
    child = fork();
    if (child < 0) {
        perror("spawn: fork");
        return 125;
    }
    if (child == 0) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        execvp(argv[2], argv + 2);
        perror(argv[2]);
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    while (wait4(child, &status, 0, &ru) < 0) {
        /* EINTR from a forwarded signal: keep waiting */
    }
    FILE *out = fopen(argv[1], "w");
    if (out == NULL) {
        perror(argv[1]);
        return 125;
    }
    fprintf(out, "%ld.%06ld %ld.%06ld %ld %d\n", (long)ru.ru_utime.tv_sec,
            (long)ru.ru_utime.tv_usec, (long)ru.ru_stime.tv_sec, (long)ru.ru_stime.tv_usec,
            ru.ru_maxrss, status);
    fclose(out);
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 125;
}
