/*
 * Backend choice: auto takes io_uring where the kernel allows it and says so;
 * where io_uring_setup is refused (as a container's seccomp policy does) it
 * falls back to epoll, says why, and asking for io_uring fails cleanly.
 */
#include "helpers.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

Test(backend, choice_is_reported, .timeout = 20)
{
    px_loop *loop;
    cr_assert_eq(px_loop_create(&loop, NULL), 0);
    px_backend b = px_loop_backend(loop);
    const char *note = px_loop_backend_note(loop);
    cr_assert(b == PX_BACKEND_EPOLL || b == PX_BACKEND_IO_URING);
    cr_assert(strstr(note, px_backend_name(b)) == note, "note \"%s\" does not start with %s", note,
              px_backend_name(b));
    char why[200];
    int usable = px_backend_probe(PX_BACKEND_IO_URING, why, sizeof why);
    if (usable == 0)
        cr_assert_eq(b, PX_BACKEND_IO_URING, "io_uring works here but auto chose %s", note);
    else
        cr_assert(strstr(note, "io_uring unavailable") != NULL, "fallback without a reason: %s",
                  note);
    px_loop_destroy(loop);

    cr_assert_eq(px_loop_create(&loop, &(px_loop_opts){.backend = PX_BACKEND_EPOLL}), 0);
    cr_assert_eq(px_loop_backend(loop), PX_BACKEND_EPOLL);
    cr_assert_str_eq(px_loop_backend_note(loop), "epoll (as asked)");
    px_loop_destroy(loop);
}

/* Makes io_uring_setup fail with EPERM in this process, as Docker's default
 * seccomp profile does, then checks what the library does.  Returns 0, 77
 * (the filter does not apply here) or the number of the failed check. */
static int blocked_child(void)
{
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW), /* other arches: skip below */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof filter / sizeof filter[0], .filter = filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        return 10;
    if (syscall(__NR_io_uring_setup, 1, NULL) != -1 || errno != EPERM)
        return 77; /* not x86-64: the filter does not apply */

    px_loop *loop;
    if (px_loop_create(&loop, NULL) != 0)
        return 11;
    if (px_loop_backend(loop) != PX_BACKEND_EPOLL)
        return 12;
    if (!strstr(px_loop_backend_note(loop), "Operation not permitted"))
        return 13;
    px_loop_destroy(loop);

    if (px_loop_create(&loop, &(px_loop_opts){.backend = PX_BACKEND_IO_URING}) != -ENOTSUP)
        return 14;
    char why[200] = "";
    if (px_backend_probe(PX_BACKEND_IO_URING, why, sizeof why) == 0 ||
        !strstr(why, "Operation not permitted"))
        return 15;
    return 0;
}

/* Criterion runs each test in a process of its own, so the filter can go
 * on the test process itself (forking would not do under TSan, which
 * refuses threads in a child of a multi-threaded process). */
Test(backend, falls_back_when_io_uring_is_blocked, .timeout = 30)
{
    int rc = blocked_child();
    if (rc == 77)
        cr_skip_test("seccomp filter does not apply on this architecture");
    cr_assert_eq(rc, 0, "check %d failed", rc);
}
