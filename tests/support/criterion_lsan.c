/*
 * Leak checking in the ASan variant's test binaries, for test processes only.  Linked
 * into those binaries only (see the Makefile).
 *
 * Criterion runs each test in a worker process of its own and collects the results in a
 * runner process that runs none of our code.  The runner leaks a little of its own
 * bookkeeping (one 48-byte block per timed test, allocated inside libcriterion), so
 * LeakSanitizer failed the whole binary at exit.  A suppression cannot single those out:
 * every test's stack also passes through libcriterion, so a "leak:libcriterion" rule
 * would hide our leaks too.  Instead leak checking is turned off in the one process
 * where no test ran; each test process is still checked when it exits, and a leak there
 * still fails that test.
 */
#include <criterion/criterion.h>

int __lsan_is_turned_off(void);

int __lsan_is_turned_off(void)
{
    return criterion_current_test == NULL;
}
