/* pp_test.h -- a minimal assertion and TAP-output kit for the engine tests.
 *
 * A failed assertion prints file:line and both operands, reports the running
 * test as "not ok" and aborts: a test binary either prints "1..N" and exits 0
 * or dies, so meson (or prove) sees every failure.  An alarm() watchdog turns
 * a hang -- a lost wake-up, say -- into a failure instead of a stuck run.
 *
 *     int main(void) {
 *         PP_TEST_BEGIN();
 *         RUN_TEST(test_fifo);
 *         return PP_TEST_DONE();
 *     }
 */
#ifndef PP_TEST_H
#define PP_TEST_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Seconds a whole test binary may run before SIGALRM kills it. */
#ifndef PP_TEST_TIMEOUT
#define PP_TEST_TIMEOUT 60
#endif

static const char *pp_test_name = "(setup)";
static int pp_test_count;

#define PP_TEST_FAIL(...)                                                    \
    do {                                                                     \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                      \
        fprintf(stderr, __VA_ARGS__);                                        \
        fprintf(stderr, "\n");                                               \
        printf("not ok %d - %s\n", pp_test_count, pp_test_name);             \
        fflush(stdout);                                                      \
        abort();                                                             \
    } while (0)

/* Integer comparison: both sides are widened to intmax_t, so a -1 return and
 * a size_t compare as C would compare them after the usual conversions. */
#define PP_TEST_CMP(name, a, op, b, sa, sb)                                  \
    do {                                                                     \
        intmax_t pp_a_ = (intmax_t)(a), pp_b_ = (intmax_t)(b);               \
        if (!(pp_a_ op pp_b_))                                               \
            PP_TEST_FAIL("%s(%s, %s) failed: %jd (0x%jx) vs %jd (0x%jx)",    \
                         name, sa, sb, pp_a_, (uintmax_t)pp_a_, pp_b_,       \
                         (uintmax_t)pp_b_);                                  \
    } while (0)

#define ASSERT_EQ(a, b) PP_TEST_CMP("ASSERT_EQ", a, ==, b, #a, #b)
#define ASSERT_NE(a, b) PP_TEST_CMP("ASSERT_NE", a, !=, b, #a, #b)
#define ASSERT_LT(a, b) PP_TEST_CMP("ASSERT_LT", a, <, b, #a, #b)
#define ASSERT_LE(a, b) PP_TEST_CMP("ASSERT_LE", a, <=, b, #a, #b)
#define ASSERT_GE(a, b) PP_TEST_CMP("ASSERT_GE", a, >=, b, #a, #b)

#define ASSERT_TRUE(x)                                                       \
    do {                                                                     \
        if (!(x))                                                            \
            PP_TEST_FAIL("ASSERT_TRUE(%s) failed", #x);                      \
    } while (0)

#define ASSERT_PTR_EQ(a, b)                                                  \
    do {                                                                     \
        const void *pp_a_ = (a), *pp_b_ = (b);                               \
        if (pp_a_ != pp_b_)                                                  \
            PP_TEST_FAIL("ASSERT_PTR_EQ(%s, %s) failed: %p vs %p", #a, #b,   \
                         pp_a_, pp_b_);                                      \
    } while (0)

#define ASSERT_NULL(p) ASSERT_PTR_EQ(p, NULL)
#define ASSERT_NOT_NULL(p) ASSERT_TRUE((p) != NULL)

/* Runs one test function (void fn(void)) and prints its TAP line. */
#define RUN_TEST(fn)                                                         \
    do {                                                                     \
        pp_test_name = #fn;                                                  \
        pp_test_count++;                                                     \
        fn();                                                                \
        printf("ok %d - %s\n", pp_test_count, #fn);                          \
        fflush(stdout);                                                      \
    } while (0)

/* SIGALRM handler: names the test that hung (write(2) only), then dies. */
static void
pp_test_timed_out(int sig)
{
    static const char msg[] = "Bail out! timed out in ";

    (void)sig;
    (void)!write(1, msg, sizeof(msg) - 1);
    (void)!write(1, pp_test_name, strlen(pp_test_name));
    (void)!write(1, "\n", 1);
    signal(SIGALRM, SIG_DFL);
    raise(SIGALRM);
}

#define PP_TEST_BEGIN()                                                      \
    (signal(SIGALRM, pp_test_timed_out), (void)alarm(PP_TEST_TIMEOUT))

/* Prints the plan and yields main's exit status. */
#define PP_TEST_DONE() (printf("1..%d\n", pp_test_count), fflush(stdout), 0)

#endif /* PP_TEST_H */
