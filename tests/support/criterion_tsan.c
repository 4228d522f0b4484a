/*
 * Lets Criterion run test binaries built with -fsanitize=thread.  Linked into the
 * TSan variant's test binaries only (see the Makefile).
 *
 * Criterion's sandbox (BoxFort) maps a shared "inheritable arena" at an address it
 * draws at random from [0x200000000000, 0x600000000000) in 16 MiB steps, keeps the
 * first one whose pages are unmapped, and maps it at the same address in every test
 * process.  ThreadSanitizer reserves nearly all of that range (shadow, meta-shadow and
 * protected gaps), so every draw is taken and Criterion aborts with "Could not
 * initialize inheritable arena" (or crashes).  The one free part is TSan's own
 * application range for PIE binaries, [0x550000000000, 0x568000000000) in the x86-64
 * layouts of both gcc's and clang's TSan runtimes.
 *
 * BoxFort draws with rand_r() through libcriterion's PLT, so this definition takes its
 * place.  Only draws made from inside libcriterion are folded into that range (steps
 * 0x350000 to 0x367fff); any other caller gets libc's rand_r() result untouched.
 * The test runner runs TSan binaries without address-space randomisation, so every
 * test process has the same layout and the arena address chosen in the runner is free
 * in each of them.
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#if !defined(__x86_64__)
#error "criterion_tsan.c knows only the x86-64 TSan memory layout"
#endif

#define ARENA_STEP_FIRST 0x350000 /* (0x550000000000 - 0x200000000000) >> 24 */
#define ARENA_STEPS 0x18000       /* (0x568000000000 - 0x550000000000) >> 24 */

int rand_r(unsigned int *seed)
{
    static int (*libc_rand_r)(unsigned int *);

    if (!libc_rand_r)
        libc_rand_r = (int (*)(unsigned int *))dlsym(RTLD_NEXT, "rand_r");
    int r = libc_rand_r(seed);

    Dl_info caller;
    if (dladdr(__builtin_return_address(0), &caller) && caller.dli_fname &&
        strstr(caller.dli_fname, "libcriterion"))
        r = ARENA_STEP_FIRST + r % ARENA_STEPS;
    return r;
}
