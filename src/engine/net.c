/* net.c -- see pp_net.h.
 *
 * Thin wrappers, in the manner of Redis's anet.c, with one difference of
 * convention: failures come back as -errno (or PP_NET_EAI()) instead of a
 * message in a caller's buffer, so the binding maps every engine error to
 * an OSError in one place.  Each socket is created with SOCK_NONBLOCK and
 * SOCK_CLOEXEC at once: no window in which another thread's fork/exec could
 * inherit it, and no extra fcntl calls.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "pp_net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* setsockopt for an int option.  Returns 0 or -errno. */
static int
set_int_opt(int fd, int level, int name, int value)
{
    return setsockopt(fd, level, name, &value, sizeof(value)) == 0 ? 0
                                                                    : -errno;
}

int
pp_net_set_nodelay(int fd, int on)
{
    return set_int_opt(fd, IPPROTO_TCP, TCP_NODELAY, on != 0);
}

int
pp_net_set_nonblock(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl < 0)
        return -errno;
    fl = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
    return fcntl(fd, F_SETFL, fl) == 0 ? 0 : -errno;
}

int
pp_net_socket_error(int fd)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return -errno;
    return -err;
}

/* Maps a getaddrinfo failure onto the one error convention. */
static int
eai_error(int code)
{
    if (code == EAI_SYSTEM)
        return errno ? -errno : -EIO;
    if (code == EAI_MEMORY)
        return -ENOMEM;
    return PP_NET_EAI(code);
}

/* getaddrinfo for a stream socket; passive: for bind.  The caller frees
 * *res.  Returns 0 or an error in the one convention. */
static int
resolve(const char *host, int port, int passive, unsigned flags,
        struct addrinfo **res)
{
    struct addrinfo hints;
    char service[16];
    int code;

    if (port < 0 || port > 65535)
        return -EINVAL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    if (passive)
        hints.ai_flags |= AI_PASSIVE;
    if (flags & PP_NET_NUMERIC)
        hints.ai_flags |= AI_NUMERICHOST;
    if (host == NULL)
        host = passive ? "0.0.0.0" : "127.0.0.1";
    snprintf(service, sizeof(service), "%d", port);
    errno = 0;
    code = getaddrinfo(host, service, &hints, res);
    return code == 0 ? 0 : eai_error(code);
}

/* Makes, binds and listens one socket for ai.  Returns the fd or -errno. */
static int
listen_one(const struct addrinfo *ai, int backlog, unsigned flags)
{
    int fd, rc;

    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                ai->ai_protocol);
    if (fd < 0)
        return -errno;
    /* A restarted server must be able to bind while connections of its
     * previous life sit in TIME_WAIT. */
    if ((rc = set_int_opt(fd, SOL_SOCKET, SO_REUSEADDR, 1)) < 0)
        goto err;
    /* V6ONLY whatever the sysctl says, so that what a listener accepts
     * does not depend on the machine (Redis does the same). */
    if (ai->ai_family == AF_INET6 &&
        (rc = set_int_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1)) < 0)
        goto err;
    if ((flags & PP_NET_REUSEPORT) &&
        (rc = set_int_opt(fd, SOL_SOCKET, SO_REUSEPORT, 1)) < 0)
        goto err;
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
        (!(flags & PP_NET_BIND_ONLY) &&
         listen(fd, backlog > 0 ? backlog : PP_NET_BACKLOG) < 0)) {
        rc = -errno;
        goto err;
    }
    return fd;

err:
    close(fd);
    return rc;
}

int
pp_net_listen_tcp(const char *host, int port, int backlog, unsigned flags)
{
    struct addrinfo *res, *ai;
    int rc;

    if ((rc = resolve(host, port, 1, flags, &res)) < 0)
        return rc;
    /* The first address that binds wins; the error of the last one that
     * did not is the one reported. */
    rc = -EADDRNOTAVAIL;
    for (ai = res; ai; ai = ai->ai_next) {
        if ((rc = listen_one(ai, backlog, flags)) >= 0)
            break;
    }
    freeaddrinfo(res);
    return rc;
}

/* Fills *sun for path.  Returns the address length or -ENAMETOOLONG. */
static int
unix_addr(const char *path, struct sockaddr_un *sun)
{
    size_t n = strlen(path);

    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    if (n == 0 || n >= sizeof(sun->sun_path))
        return n == 0 ? -EINVAL : -ENAMETOOLONG;
    memcpy(sun->sun_path, path, n);
    if (path[0] == '@') {
        /* Abstract: a leading NUL, and the length says where it ends. */
        sun->sun_path[0] = '\0';
        return (int)(offsetof(struct sockaddr_un, sun_path) + n);
    }
    return (int)(offsetof(struct sockaddr_un, sun_path) + n + 1);
}

int
pp_net_listen_unix(const char *path, int backlog, unsigned flags)
{
    struct sockaddr_un sun;
    struct stat st;
    int fd, len, rc;

    if ((len = unix_addr(path, &sun)) < 0)
        return len;
    /* A socket file outlives its listener; only a socket is ever removed,
     * so a typo cannot delete a user's file. */
    if ((flags & PP_NET_UNLINK) && path[0] != '@' &&
        lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        (void)unlink(path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&sun, (socklen_t)len) < 0 ||
        listen(fd, backlog > 0 ? backlog : PP_NET_BACKLOG) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

int
pp_net_accept(int listen_fd, unsigned flags)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd;

    /* The address is fetched only to tell TCP from Unix sockets, which
     * saves a getsockopt per connection. */
    do {
        len = sizeof(ss);
        fd = accept4(listen_fd, (struct sockaddr *)&ss, &len,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -errno;
    if (!(flags & PP_NET_NO_NODELAY) &&
        (ss.ss_family == AF_INET || ss.ss_family == AF_INET6))
        (void)pp_net_set_nodelay(fd, 1);  /* only a hint; never fatal */
    return fd;
}

/* Starts connecting fd.  Returns 0 (connected or in progress) or -errno. */
static int
connect_start(int fd, const struct sockaddr *sa, socklen_t len)
{
    if (connect(fd, sa, len) == 0)
        return 0;
    /* A non-blocking connect interrupted by a signal goes on in the
     * background, exactly like EINPROGRESS; calling it again would only
     * say EALREADY. */
    if (errno == EINPROGRESS || errno == EINTR)
        return 0;
    return -errno;
}

int
pp_net_connect_tcp(const char *host, int port, unsigned flags)
{
    struct addrinfo *res, *ai;
    int fd = -EADDRNOTAVAIL, rc;

    if ((rc = resolve(host, port, 0, flags, &res)) < 0)
        return rc;
    /* An address that fails at once (no route, no IPv6) makes way for the
     * next; one still in progress is the answer, and if it is refused later
     * the caller hears so from pp_net_socket_error().  There is no Happy
     * Eyeballs race: the engine connects to loopback and known hosts. */
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family,
                    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            fd = -errno;
            continue;
        }
        if (!(flags & PP_NET_NO_NODELAY))
            (void)pp_net_set_nodelay(fd, 1);
        if ((rc = connect_start(fd, ai->ai_addr, ai->ai_addrlen)) == 0)
            break;
        close(fd);
        fd = rc;
    }
    freeaddrinfo(res);
    return fd;
}

int
pp_net_connect_unix(const char *path, unsigned flags)
{
    struct sockaddr_un sun;
    int fd, len, rc;

    (void)flags;
    if ((len = unix_addr(path, &sun)) < 0)
        return len;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if ((rc = connect_start(fd, (struct sockaddr *)&sun, (socklen_t)len)) < 0) {
        close(fd);
        return rc;
    }
    return fd;
}

int
pp_net_local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -EAFNOSUPPORT;
}

/* Splits sa into host text and port.  Returns the family or -errno. */
static int
addr_parts(const struct sockaddr *sa, socklen_t salen, char *host,
           size_t hostlen, int *port)
{
    const struct sockaddr_un *sun;
    size_t n;

    switch (sa->sa_family) {
    case AF_INET:
        if (inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr,
                      host, (socklen_t)hostlen) == NULL)
            return -ENOSPC;
        *port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
        return AF_INET;
    case AF_INET6:
        if (inet_ntop(AF_INET6,
                      &((const struct sockaddr_in6 *)sa)->sin6_addr, host,
                      (socklen_t)hostlen) == NULL)
            return -ENOSPC;
        *port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
        return AF_INET6;
    case AF_UNIX:
        sun = (const struct sockaddr_un *)sa;
        n = salen > offsetof(struct sockaddr_un, sun_path)
                ? salen - offsetof(struct sockaddr_un, sun_path) : 0;
        if (n > 0 && sun->sun_path[0] == '\0') {
            /* Abstract: shown with '@' for the leading NUL. */
            if (n + 1 > hostlen)
                return -ENOSPC;
            host[0] = '@';
            memcpy(host + 1, sun->sun_path + 1, n - 1);
            host[n] = '\0';
        } else {
            n = strnlen(sun->sun_path, n);
            if (n + 1 > hostlen)
                return -ENOSPC;
            memcpy(host, sun->sun_path, n);
            host[n] = '\0';
        }
        *port = -1;
        return AF_UNIX;
    }
    return -EAFNOSUPPORT;
}

int
pp_net_format_addr(const struct sockaddr *sa, socklen_t salen, char *buf,
                   size_t len)
{
    char host[PP_NET_ADDR_LEN];
    int port, family, n;

    family = addr_parts(sa, salen, host, sizeof(host), &port);
    if (family < 0)
        return family;
    if (family == AF_UNIX)
        n = snprintf(buf, len, "%s", host);
    else if (family == AF_INET6)
        n = snprintf(buf, len, "[%s]:%d", host, port);
    else
        n = snprintf(buf, len, "%s:%d", host, port);
    return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}

static int
get_name(int fd, int peer, struct sockaddr_storage *ss, socklen_t *len)
{
    int rc;

    *len = sizeof(*ss);
    rc = peer ? getpeername(fd, (struct sockaddr *)ss, len)
              : getsockname(fd, (struct sockaddr *)ss, len);
    return rc == 0 ? 0 : -errno;
}

static int
format_name(int fd, int peer, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    int rc;

    if ((rc = get_name(fd, peer, &ss, &sslen)) < 0)
        return rc;
    return pp_net_format_addr((struct sockaddr *)&ss, sslen, buf, len);
}

int
pp_net_sockname(int fd, char *buf, size_t len)
{
    return format_name(fd, 0, buf, len);
}

int
pp_net_peername(int fd, char *buf, size_t len)
{
    return format_name(fd, 1, buf, len);
}

int
pp_net_addr_parts(int fd, int peer, char *host, size_t hostlen, int *port)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    int rc;

    if ((rc = get_name(fd, peer, &ss, &sslen)) < 0)
        return rc;
    return addr_parts((struct sockaddr *)&ss, sslen, host, hostlen, port);
}

const char *
pp_net_strerror(int rc)
{
    if (PP_NET_IS_EAI(rc))
        return gai_strerror(rc + PP_NET_EAI_BASE);
    return strerror(-rc);
}
