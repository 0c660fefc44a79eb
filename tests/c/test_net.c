/* test_net.c -- pp_net: listen, accept and connect over 127.0.0.1, [::1]
 * and Unix sockets; SO_REUSEPORT; addresses; errors.  Only loopback
 * addresses and Unix sockets are ever used. */
#include "pp_net.h"
#include "pp_test.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/un.h>

/* Waits until fd reports events (poll(2)); fails the test on a timeout. */
static void
wait_fd(int fd, short events)
{
    struct pollfd p = {fd, events, 0};

    ASSERT_EQ(poll(&p, 1, 5000), 1);
}

static void
check_flags(int fd)
{
    ASSERT_TRUE(fcntl(fd, F_GETFL) & O_NONBLOCK);
    ASSERT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
}

static int
nodelay(int fd)
{
    int on = -1;
    socklen_t len = sizeof(on);

    ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &len), 0);
    return on;
}

/* Accepts one connection, waiting for it. */
static int
accept_one(int lfd)
{
    int fd;

    while ((fd = pp_net_accept(lfd, 0)) == -EAGAIN)
        wait_fd(lfd, POLLIN);
    ASSERT_GE(fd, 0);
    return fd;
}

/* Finishes a non-blocking connect. */
static void
finish_connect(int fd)
{
    wait_fd(fd, POLLOUT);
    ASSERT_EQ(pp_net_socket_error(fd), 0);
}

/* Sends a line each way and reads it back. */
static void
exchange(int a, int b)
{
    char buf[16];

    ASSERT_EQ(write(a, "ping", 4), 4);
    wait_fd(b, POLLIN);
    ASSERT_EQ(read(b, buf, sizeof(buf)), 4);
    ASSERT_TRUE(memcmp(buf, "ping", 4) == 0);
    ASSERT_EQ(write(b, "pong", 4), 4);
    wait_fd(a, POLLIN);
    ASSERT_EQ(read(a, buf, sizeof(buf)), 4);
    ASSERT_TRUE(memcmp(buf, "pong", 4) == 0);
}

static void
test_tcp4(void)
{
    char name[PP_NET_ADDR_LEN], peer[PP_NET_ADDR_LEN], want[64], host[64];
    int lfd, cfd, sfd, port, p;

    lfd = pp_net_listen_tcp("127.0.0.1", 0, 0, 0);
    ASSERT_GE(lfd, 0);
    check_flags(lfd);
    port = pp_net_local_port(lfd);
    ASSERT_GE(port, 1);
    ASSERT_EQ(pp_net_sockname(lfd, name, sizeof(name)), 0);
    snprintf(want, sizeof(want), "127.0.0.1:%d", port);
    ASSERT_TRUE(strcmp(name, want) == 0);
    /* Nothing waiting yet. */
    ASSERT_EQ(pp_net_accept(lfd, 0), -EAGAIN);

    cfd = pp_net_connect_tcp("127.0.0.1", port, PP_NET_NUMERIC);
    ASSERT_GE(cfd, 0);
    check_flags(cfd);
    ASSERT_NE(nodelay(cfd), 0);
    finish_connect(cfd);
    sfd = accept_one(lfd);
    check_flags(sfd);
    ASSERT_NE(nodelay(sfd), 0);
    exchange(cfd, sfd);

    ASSERT_EQ(pp_net_peername(sfd, peer, sizeof(peer)), 0);
    ASSERT_EQ(pp_net_sockname(cfd, name, sizeof(name)), 0);
    ASSERT_TRUE(strcmp(peer, name) == 0);
    ASSERT_EQ(pp_net_peername(cfd, peer, sizeof(peer)), 0);
    ASSERT_TRUE(strcmp(peer, want) == 0);
    ASSERT_EQ(pp_net_addr_parts(cfd, 1, host, sizeof(host), &p), AF_INET);
    ASSERT_TRUE(strcmp(host, "127.0.0.1") == 0);
    ASSERT_EQ(p, port);
    close(sfd);
    close(cfd);

    /* PP_NET_NO_NODELAY leaves Nagle on. */
    cfd = pp_net_connect_tcp(NULL, port, PP_NET_NO_NODELAY);
    ASSERT_GE(cfd, 0);
    ASSERT_EQ(nodelay(cfd), 0);
    finish_connect(cfd);
    while ((sfd = pp_net_accept(lfd, PP_NET_NO_NODELAY)) == -EAGAIN)
        wait_fd(lfd, POLLIN);
    ASSERT_GE(sfd, 0);
    ASSERT_EQ(nodelay(sfd), 0);
    ASSERT_EQ(pp_net_set_nodelay(sfd, 1), 0);
    ASSERT_NE(nodelay(sfd), 0);
    close(sfd);
    close(cfd);
    close(lfd);
}

static void
test_tcp6(void)
{
    char name[PP_NET_ADDR_LEN], want[64], host[64];
    int lfd, cfd, sfd, port, p, v6only = 0;
    socklen_t len = sizeof(v6only);

    lfd = pp_net_listen_tcp("::1", 0, 16, PP_NET_NUMERIC);
    if (lfd == -EADDRNOTAVAIL || lfd == -EAFNOSUPPORT) {
        printf("# skip: no [::1] here (%s)\n", pp_net_strerror(lfd));
        return;
    }
    ASSERT_GE(lfd, 0);
    ASSERT_EQ(getsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &len), 0);
    ASSERT_EQ(v6only, 1);
    port = pp_net_local_port(lfd);
    ASSERT_EQ(pp_net_sockname(lfd, name, sizeof(name)), 0);
    snprintf(want, sizeof(want), "[::1]:%d", port);
    ASSERT_TRUE(strcmp(name, want) == 0);
    cfd = pp_net_connect_tcp("::1", port, 0);
    ASSERT_GE(cfd, 0);
    ASSERT_NE(nodelay(cfd), 0);
    finish_connect(cfd);
    sfd = accept_one(lfd);
    ASSERT_NE(nodelay(sfd), 0);
    exchange(sfd, cfd);
    ASSERT_EQ(pp_net_addr_parts(sfd, 0, host, sizeof(host), &p), AF_INET6);
    ASSERT_TRUE(strcmp(host, "::1") == 0);
    ASSERT_EQ(p, port);
    close(sfd);
    close(cfd);
    close(lfd);
}

static void
test_unix(void)
{
    char dir[] = "/tmp/pp_net_XXXXXX", path[256], other[256], name[256];
    char longpath[200];
    int lfd, lfd2, cfd, sfd, p, fd;

    ASSERT_NOT_NULL(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/sock", dir);
    lfd = pp_net_listen_unix(path, 0, 0);
    ASSERT_GE(lfd, 0);
    check_flags(lfd);
    ASSERT_EQ(pp_net_sockname(lfd, name, sizeof(name)), 0);
    ASSERT_TRUE(strcmp(name, path) == 0);
    ASSERT_EQ(pp_net_local_port(lfd), -EAFNOSUPPORT);

    cfd = pp_net_connect_unix(path, 0);
    ASSERT_GE(cfd, 0);
    check_flags(cfd);
    finish_connect(cfd);
    sfd = accept_one(lfd);
    check_flags(sfd);
    exchange(cfd, sfd);
    /* The client is unnamed; the server's side is the path. */
    ASSERT_EQ(pp_net_peername(sfd, name, sizeof(name)), 0);
    ASSERT_TRUE(strcmp(name, "") == 0);
    ASSERT_EQ(pp_net_peername(cfd, name, sizeof(name)), 0);
    ASSERT_TRUE(strcmp(name, path) == 0);
    ASSERT_EQ(pp_net_addr_parts(cfd, 1, name, sizeof(name), &p), AF_UNIX);
    ASSERT_EQ(p, -1);
    close(sfd);
    close(cfd);

    /* The path is taken while the socket file exists... */
    ASSERT_EQ(pp_net_listen_unix(path, 0, 0), -EADDRINUSE);
    close(lfd);
    ASSERT_EQ(pp_net_listen_unix(path, 0, 0), -EADDRINUSE);
    /* ...until PP_NET_UNLINK removes the stale one. */
    lfd2 = pp_net_listen_unix(path, 0, PP_NET_UNLINK);
    ASSERT_GE(lfd2, 0);
    close(lfd2);

    /* PP_NET_UNLINK never removes anything but a socket. */
    snprintf(other, sizeof(other), "%s/file", dir);
    fd = open(other, O_CREAT | O_WRONLY, 0600);
    ASSERT_GE(fd, 0);
    close(fd);
    ASSERT_EQ(pp_net_listen_unix(other, 0, PP_NET_UNLINK), -EADDRINUSE);
    ASSERT_EQ(access(other, F_OK), 0);

    memset(longpath, 'x', sizeof(longpath) - 1);
    longpath[0] = '/';
    longpath[sizeof(longpath) - 1] = '\0';
    ASSERT_EQ(pp_net_listen_unix(longpath, 0, 0), -ENAMETOOLONG);
    ASSERT_EQ(pp_net_connect_unix(longpath, 0), -ENAMETOOLONG);
    ASSERT_EQ(pp_net_listen_unix("", 0, 0), -EINVAL);
    snprintf(other, sizeof(other), "%s/none", dir);
    ASSERT_EQ(pp_net_connect_unix(other, 0), -ENOENT);

    unlink(path);
    snprintf(other, sizeof(other), "%s/file", dir);
    unlink(other);
    ASSERT_EQ(rmdir(dir), 0);
}

static void
test_unix_abstract(void)
{
    char path[64], name[64];
    int lfd, cfd, sfd;

    snprintf(path, sizeof(path), "@pp_net_test_%d", (int)getpid());
    lfd = pp_net_listen_unix(path, 0, PP_NET_UNLINK);
    ASSERT_GE(lfd, 0);
    ASSERT_EQ(pp_net_sockname(lfd, name, sizeof(name)), 0);
    ASSERT_TRUE(strcmp(name, path) == 0);
    cfd = pp_net_connect_unix(path, 0);
    ASSERT_GE(cfd, 0);
    finish_connect(cfd);
    sfd = accept_one(lfd);
    exchange(sfd, cfd);
    close(sfd);
    close(cfd);
    close(lfd);
}

/* A Unix listener with a full backlog refuses a non-blocking connect with
 * EAGAIN at once (TCP would leave it in progress). */
static void
test_unix_backlog_full(void)
{
    char path[64];
    int lfd, fds[64], n, rc = 0;

    snprintf(path, sizeof(path), "@pp_net_backlog_%d", (int)getpid());
    lfd = pp_net_listen_unix(path, 1, 0);
    ASSERT_GE(lfd, 0);
    for (n = 0; n < 64; n++) {
        if ((rc = pp_net_connect_unix(path, 0)) < 0)
            break;
        fds[n] = rc;
    }
    ASSERT_EQ(rc, -EAGAIN);
    ASSERT_GE(n, 1);
    while (n-- > 0)
        close(fds[n]);
    close(lfd);
}

/* Two listeners on one port with SO_REUSEPORT, one per worker: the kernel
 * spreads connections over both. */
#define NCLIENTS 64

static void
test_reuseport(void)
{
    int a, b, port, i, got[2] = {0, 0}, cfd[NCLIENTS];
    struct pollfd p[2];

    a = pp_net_listen_tcp("127.0.0.1", 0, 128, PP_NET_REUSEPORT);
    ASSERT_GE(a, 0);
    port = pp_net_local_port(a);
    b = pp_net_listen_tcp("127.0.0.1", port, 128, PP_NET_REUSEPORT);
    ASSERT_GE(b, 0);
    ASSERT_EQ(pp_net_local_port(b), port);
    /* Without the flag the port is taken. */
    ASSERT_EQ(pp_net_listen_tcp("127.0.0.1", port, 0, 0), -EADDRINUSE);

    for (i = 0; i < NCLIENTS; i++) {
        cfd[i] = pp_net_connect_tcp("127.0.0.1", port, 0);
        ASSERT_GE(cfd[i], 0);
    }
    p[0].fd = a;
    p[1].fd = b;
    while (got[0] + got[1] < NCLIENTS) {
        int fd;

        p[0].events = p[1].events = POLLIN;
        ASSERT_GE(poll(p, 2, 5000), 1);
        for (i = 0; i < 2; i++) {
            while ((fd = pp_net_accept(p[i].fd, 0)) >= 0) {
                got[i]++;
                close(fd);
            }
            ASSERT_EQ(fd, -EAGAIN);
        }
    }
    ASSERT_EQ(got[0] + got[1], NCLIENTS);
    /* Spread by a hash of the client's port: 64 all on one side would be
     * a 1 in 2^63 event. */
    ASSERT_GE(got[0], 1);
    ASSERT_GE(got[1], 1);
    printf("# reuseport split: %d / %d\n", got[0], got[1]);
    for (i = 0; i < NCLIENTS; i++)
        close(cfd[i]);
    close(a);
    close(b);
}

static void
test_errors(void)
{
    char small[4];
    int lfd, port, fd;

    /* A port nobody listens on (freed just now): refused, either at once
     * or when the connect completes. */
    lfd = pp_net_listen_tcp("127.0.0.1", 0, 0, 0);
    port = pp_net_local_port(lfd);
    close(lfd);
    fd = pp_net_connect_tcp("127.0.0.1", port, 0);
    if (fd >= 0) {
        wait_fd(fd, POLLOUT);
        ASSERT_EQ(pp_net_socket_error(fd), -ECONNREFUSED);
        close(fd);
    } else {
        ASSERT_EQ(fd, -ECONNREFUSED);
    }

    /* Resolver failures sit below every -errno and have a message; with
     * PP_NET_NUMERIC nothing is looked up. */
    fd = pp_net_listen_tcp("999.1.1.1", 0, 0, PP_NET_NUMERIC);
    ASSERT_TRUE(PP_NET_IS_EAI(fd));
    ASSERT_TRUE(strlen(pp_net_strerror(fd)) > 0);
    fd = pp_net_connect_tcp("not an address", 80, PP_NET_NUMERIC);
    ASSERT_TRUE(PP_NET_IS_EAI(fd));
    ASSERT_TRUE(strstr(pp_net_strerror(-ECONNREFUSED), "refused") != NULL);
    ASSERT_TRUE(!PP_NET_IS_EAI(-ECONNREFUSED));

    ASSERT_EQ(pp_net_listen_tcp("127.0.0.1", 70000, 0, 0), -EINVAL);
    ASSERT_EQ(pp_net_listen_tcp("127.0.0.1", -1, 0, 0), -EINVAL);
    ASSERT_EQ(pp_net_accept(-1, 0), -EBADF);
    ASSERT_EQ(pp_net_socket_error(-1), -EBADF);

    lfd = pp_net_listen_tcp("127.0.0.1", 0, 0, 0);
    ASSERT_EQ(pp_net_sockname(lfd, small, sizeof(small)), -ENOSPC);
    ASSERT_EQ(pp_net_peername(lfd, small, sizeof(small)), -ENOTCONN);
    close(lfd);
}

int
main(void)
{
    PP_TEST_BEGIN();
    RUN_TEST(test_tcp4);
    RUN_TEST(test_tcp6);
    RUN_TEST(test_unix);
    RUN_TEST(test_unix_abstract);
    RUN_TEST(test_unix_backlog_full);
    RUN_TEST(test_reuseport);
    RUN_TEST(test_errors);
    return PP_TEST_DONE();
}
