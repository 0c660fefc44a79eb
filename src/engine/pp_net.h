/* pp_net.h -- socket helpers: listen, accept, connect, addresses.
 *
 * Every socket made here is non-blocking and close-on-exec, and TCP sockets
 * get TCP_NODELAY (PyParallel's protocols answer in whole messages, so
 * Nagle's algorithm would only add a round trip of delay).
 *
 * Errors: one convention, libuv's.  A function returns a file descriptor or
 * 0 on success and a negative errno value on failure.  A failure of name
 * resolution (getaddrinfo) is returned as PP_NET_EAI(code), which lies below
 * every -errno value; pp_net_strerror() turns either kind into a message.
 * EINTR is retried at each syscall and never returned.
 *
 * Addresses: host is a name or a numeric IPv4/IPv6 address ("127.0.0.1",
 * "::1"); NULL means "0.0.0.0" for listening and "127.0.0.1" for
 * connecting.  A Unix socket path that starts with '@' names a socket in
 * Linux's abstract namespace (no file).  No Python here.
 */
#ifndef PP_NET_H
#define PP_NET_H

#include <stddef.h>
#include <sys/socket.h>

/* Flags. */
#define PP_NET_REUSEPORT 1u     /* listen: SO_REUSEPORT, one listener per
                                 * worker, the kernel spreading connections */
#define PP_NET_NUMERIC 2u       /* host must be numeric: never resolve */
#define PP_NET_UNLINK 4u        /* listen_unix: remove a stale socket file */
#define PP_NET_NO_NODELAY 8u    /* leave Nagle's algorithm on */
#define PP_NET_BIND_ONLY 16u    /* listen_tcp: bind but do not listen (a
                                 * probe: without SO_REUSEPORT it fails with
                                 * -EADDRINUSE where any listener is, even
                                 * a SO_REUSEPORT group that would let the
                                 * caller's own sockets join it) */

/* getaddrinfo's EAI_* codes (negative in glibc) moved below every -errno. */
#define PP_NET_EAI_BASE 10000
#define PP_NET_EAI(code) (-PP_NET_EAI_BASE + (code))
#define PP_NET_IS_EAI(rc) ((rc) <= -PP_NET_EAI_BASE)

/* backlog <= 0 picks this; the kernel caps it at net.core.somaxconn. */
#define PP_NET_BACKLOG 1024

/* Room for any printable address: "[v6%scope]:port" or a Unix path. */
#define PP_NET_ADDR_LEN 128

/* Binds a listening TCP socket to host:port (port 0: any free port; read it
 * back with pp_net_local_port) with SO_REUSEADDR, and SO_REUSEPORT when
 * asked.  An IPv6 socket is IPV6_V6ONLY, so "::" and "0.0.0.0" can be
 * bound side by side.  Returns the fd or -errno / PP_NET_EAI(). */
int pp_net_listen_tcp(const char *host, int port, int backlog,
                      unsigned flags);

/* Binds a listening Unix stream socket at path.  With PP_NET_UNLINK an
 * existing socket file there is removed first (never another kind of
 * file).  Returns the fd, -ENAMETOOLONG or -errno. */
int pp_net_listen_unix(const char *path, int backlog, unsigned flags);

/* Accepts one connection (accept4, non-blocking, close-on-exec; TCP_NODELAY
 * on TCP unless PP_NET_NO_NODELAY).  Returns the fd or -errno: -EAGAIN when
 * none is waiting. */
int pp_net_accept(int listen_fd, unsigned flags);

/* Starts a non-blocking connect to host:port, trying each resolved address
 * until one is accepted or in progress.  Returns the fd -- connected, or
 * still connecting: wait for it to become writable, then read the outcome
 * with pp_net_socket_error() -- or -errno / PP_NET_EAI(). */
int pp_net_connect_tcp(const char *host, int port, unsigned flags);

/* The same for a Unix socket.  Unlike TCP, a Unix connect to a listener
 * whose backlog is full fails at once with -EAGAIN. */
int pp_net_connect_unix(const char *path, unsigned flags);

/* The pending error of a socket (SO_ERROR) as -errno, or 0. */
int pp_net_socket_error(int fd);

int pp_net_set_nodelay(int fd, int on);
int pp_net_set_nonblock(int fd, int on);

/* The local port of a bound socket, or -errno. */
int pp_net_local_port(int fd);

/* Writes the socket's local / peer address into buf as "1.2.3.4:80",
 * "[::1]:80", a Unix path, "@name" (abstract) or "" (an unnamed Unix
 * socket).  Returns 0, -ENOSPC if len is too small, or -errno. */
int pp_net_sockname(int fd, char *buf, size_t len);
int pp_net_peername(int fd, char *buf, size_t len);

/* The same for an address already at hand. */
int pp_net_format_addr(const struct sockaddr *sa, socklen_t salen,
                       char *buf, size_t len);

/* The local (peer == 0) or peer address as parts, for callers that want a
 * (host, port) pair: host gets the numeric address or the Unix path, *port
 * the port (-1 for Unix).  Returns the family (AF_INET, AF_INET6, AF_UNIX)
 * or -errno. */
int pp_net_addr_parts(int fd, int peer, char *host, size_t hostlen,
                      int *port);

/* A message for any error these functions return (static storage). */
const char *pp_net_strerror(int rc);

#endif /* PP_NET_H */
