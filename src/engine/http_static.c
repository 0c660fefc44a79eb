/* http_static.c -- static files under a URL prefix (see pp_http_static.h). */
#include "pp_http_static.h"
#include "http_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

struct pp_http_static {
    int dir_fd;                  /* O_PATH | O_DIRECTORY */
    size_t prefix_len;           /* without a trailing '/'; 0 for "/" */
    char prefix[];
};

int
pp_http_static_new(pp_http_static **out, const char *prefix, const char *dir)
{
    size_t n = prefix ? strlen(prefix) : 0;
    pp_http_static *s;
    int fd;

    *out = NULL;
    if (n == 0 || prefix[0] != '/' || memchr(prefix, '?', n) || memchr(prefix, '%', n))
        return -EINVAL;
    while (n > 0 && prefix[n - 1] == '/')
        n--;
    fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if ((s = malloc(sizeof(*s) + n + 1)) == NULL) {
        close(fd);
        return -ENOMEM;
    }
    s->dir_fd = fd;
    s->prefix_len = n;
    memcpy(s->prefix, prefix, n);
    s->prefix[n] = '\0';
    *out = s;
    return 0;
}

void
pp_http_static_free(pp_http_static *s)
{
    if (s) {
        close(s->dir_fd);
        free(s);
    }
}

void
pp_http_group_set_static(pp_http_group *g, pp_http_static *const *mounts, size_t n)
{
    g->statics = mounts;
    g->nstatics = n;
}

/* ---- the path ----------------------------------------------------------------- */

static int
hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The part of the path below the mount, decoded and checked, as a path
 * relative to the root ("" for the root itself) in out.  Returns 0, or
 * the status to refuse with. */
static int
relative_path(const char *p, size_t n, char *out, size_t cap)
{
    char dec[PATH_MAX];
    size_t i, d = 0, o = 0, seg;

    for (i = 0; i < n; i++) {
        int c = (unsigned char)p[i];
        if (c == '%') {
            int hi = i + 2 < n ? hexval(p[i + 1]) : -1, lo = hi >= 0 ? hexval(p[i + 2]) : -1;
            if (lo < 0)
                return 400;
            c = hi * 16 + lo;
            i += 2;
        }
        if (c == '\0')
            return 400;
        if (d + 1 >= sizeof dec)
            return 414;
        dec[d++] = (char)c;
    }
    /* Segments, after decoding: "%2e%2e" is "..", "%2f" a separator. */
    for (i = 0; i < d; i = seg + 1) {
        size_t len;
        seg = i;
        while (seg < d && dec[seg] != '/')
            seg++;
        len = seg - i;
        if (len == 0 || (len == 1 && dec[i] == '.'))
            continue;
        if (dec[i] == '.')
            return 404;          /* "..", and hidden files */
        if (o + len + 2 > cap)
            return 414;
        if (o)
            out[o++] = '/';
        memcpy(out + o, dec + i, len);
        o += len;
    }
    out[o] = '\0';
    return 0;
}

/* Opens rel (relative, checked) beneath dir_fd.  Returns an fd or -errno. */
static int
open_beneath(int dir_fd, const char *rel)
{
    struct open_how how;
    char buf[PATH_MAX], *seg, *save = NULL;
    int fd, next;
    long rc;

    memset(&how, 0, sizeof how);
    how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    rc = syscall(SYS_openat2, dir_fd, *rel ? rel : ".", &how, sizeof how);
    if (rc >= 0)
        return (int)rc;
    if (errno != ENOSYS && errno != EPERM)   /* EPERM: a seccomp filter */
        return -errno;
    /* No openat2: segment by segment, following no symbolic link at all. */
    snprintf(buf, sizeof buf, "%s", rel);
    fd = openat(dir_fd, ".", O_RDONLY | O_CLOEXEC | O_DIRECTORY);
    for (seg = strtok_r(buf, "/", &save); fd >= 0 && seg; seg = strtok_r(NULL, "/", &save)) {
        next = openat(fd, seg, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW);
        close(fd);
        fd = next;
    }
    return fd >= 0 ? fd : -errno;
}

/* ---- the answer --------------------------------------------------------------- */

static const struct { const char *ext, *type; } types[] = {
    {"html", "text/html; charset=utf-8"}, {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"}, {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"}, {"json", "application/json"},
    {"txt", "text/plain; charset=utf-8"}, {"md", "text/markdown; charset=utf-8"},
    {"csv", "text/csv; charset=utf-8"}, {"xml", "application/xml"},
    {"svg", "image/svg+xml"}, {"png", "image/png"}, {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"}, {"gif", "image/gif"}, {"webp", "image/webp"},
    {"avif", "image/avif"}, {"ico", "image/x-icon"}, {"woff", "font/woff"},
    {"woff2", "font/woff2"}, {"ttf", "font/ttf"}, {"otf", "font/otf"},
    {"wasm", "application/wasm"}, {"pdf", "application/pdf"},
    {"zip", "application/zip"}, {"gz", "application/gzip"},
    {"tar", "application/x-tar"}, {"mp4", "video/mp4"}, {"webm", "video/webm"},
    {"mp3", "audio/mpeg"}, {"ogg", "audio/ogg"}, {"wav", "audio/wav"},
};

static const char *
content_type(const char *rel)
{
    const char *slash = strrchr(rel, '/'), *dot = strrchr(rel, '.');
    size_t i;

    if (dot && (!slash || dot > slash))
        for (i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcasecmp(dot + 1, types[i].ext) == 0)
                return types[i].type;
    return "application/octet-stream";
}

static void
answer(pp_http_request *req, int status, const char *headers, size_t headers_len)
{
    pp_http_response r;
    char body[64];
    int n = snprintf(body, sizeof body, "%d %s\n", status, pp_http_reason(status));

    pp_http_response_init(&r, status);
    r.content_type = "text/plain; charset=utf-8";
    r.content_type_len = strlen(r.content_type);
    r.body = body;
    r.body_len = (size_t)n;
    r.headers = headers;
    r.headers_len = headers_len;
    (void)pp_http_respond(req, &r);
}

static int
header_is(const pp_http_header *h, const char *v)
{
    return h && h->value_len == strlen(v) && memcmp(h->value, v, h->value_len) == 0;
}

/* If-None-Match: "*" or a list of entity tags, compared weakly. */
static int
etag_matches(const pp_http_header *h, const char *etag)
{
    const char *p = h->value, *end = p + h->value_len;
    size_t elen = strlen(etag);

    while (p < end) {
        const char *q;
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        if (p < end && *p == '*')
            return 1;
        if (end - p >= 2 && p[0] == 'W' && p[1] == '/')
            p += 2;
        q = p;
        while (q < end && *q != ',')
            q++;
        while (q > p && (q[-1] == ' ' || q[-1] == '\t'))
            q--;
        if ((size_t)(q - p) == elen && memcmp(p, etag, elen) == 0)
            return 1;
        while (p < end && *p != ',')
            p++;
    }
    return 0;
}

/* An IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"); -1 when it is not. */
static time_t
parse_date(const pp_http_header *h)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    char mon[4], day[4], v[32];
    struct tm tm;
    int d, y, hh, mm, ss, used = 0;
    const char *m;

    if (h->value_len != 29)
        return -1;
    memcpy(v, h->value, 29);
    v[29] = '\0';
    memset(&tm, 0, sizeof tm);
    if (sscanf(v, "%3s, %2d %3s %4d %2d:%2d:%2d GMT%n", day, &d, mon, &y, &hh, &mm, &ss,
               &used) != 7 || used != 29)
        return -1;
    if ((m = strstr(months, mon)) == NULL || (m - months) % 3 != 0)
        return -1;
    tm.tm_mday = d;
    tm.tm_mon = (int)((m - months) / 3);
    tm.tm_year = y - 1900;
    tm.tm_hour = hh;
    tm.tm_min = mm;
    tm.tm_sec = ss;
    return timegm(&tm);
}

/* A Range value for a file of size bytes: 1 with [*first, *last] for one
 * satisfiable range, 0 to ignore it (whole file), -1 unsatisfiable. */
static int
parse_range(const pp_http_header *h, uint64_t size, uint64_t *first, uint64_t *last)
{
    const char *p = h->value, *end = p + h->value_len;
    uint64_t a = 0, b = 0;
    int has_a = 0, has_b = 0;

    if (h->value_len < 7 || strncasecmp(p, "bytes=", 6) != 0 || memchr(p, ',', h->value_len))
        return 0;
    for (p += 6; p < end && *p >= '0' && *p <= '9'; p++, has_a = 1) {
        if (a > (UINT64_MAX - 9) / 10)
            return 0;
        a = a * 10 + (uint64_t)(*p - '0');
    }
    if (p == end || *p++ != '-')
        return 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++, has_b = 1) {
        if (b > (UINT64_MAX - 9) / 10)
            b = UINT64_MAX / 10;  /* past any file: clamped below */
        b = b * 10 + (uint64_t)(*p - '0');
    }
    if (p != end || (!has_a && !has_b))
        return 0;
    if (!has_a) {                /* the last b bytes */
        if (b == 0 || size == 0)
            return -1;
        *first = b >= size ? 0 : size - b;
        *last = size - 1;
        return 1;
    }
    if (has_b && b < a)
        return 0;                /* invalid: ignored */
    if (a >= size)
        return -1;
    *first = a;
    *last = has_b && b < size ? b : size - 1;
    return 1;
}

int
pp_http_static_serve(const pp_http_static *s, pp_http_request *req)
{
    char rel[PATH_MAX], etag[48], lastmod[32], hdrs[512];
    const pp_http_header *h;
    pp_http_response r;
    struct stat st;
    int status, fd, n, head = 0, range = 0;
    uint64_t first = 0, last = 0;
    const char *sub = req->path + s->prefix_len;
    size_t sub_len = req->path_len - s->prefix_len;

    if (req->path_len < s->prefix_len || memcmp(req->path, s->prefix, s->prefix_len) != 0 ||
        (sub_len > 0 && sub[0] != '/'))
        return 0;
    if (req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0)
        head = 1;
    else if (!(req->method_len == 3 && memcmp(req->method, "GET", 3) == 0)) {
        static const char allow[] = "Allow: GET, HEAD\r\n";
        answer(req, 405, allow, sizeof allow - 1);
        return 1;
    }
    if ((status = relative_path(sub, sub_len, rel, sizeof rel)) != 0) {
        answer(req, status, NULL, 0);
        return 1;
    }
    if ((fd = open_beneath(s->dir_fd, rel)) < 0 || fstat(fd, &st) < 0) {
        if (fd >= 0)
            close(fd);
        answer(req, 404, NULL, 0);
        return 1;
    }
    if (S_ISDIR(st.st_mode)) {
        int index;
        if (sub_len == 0 || sub[sub_len - 1] != '/') {
            /* Relative links in the index need the '/': redirect. */
            n = snprintf(hdrs, sizeof hdrs, "Location: %.*s/%s%.*s\r\n",
                         (int)req->path_len, req->path, req->query_len ? "?" : "",
                         (int)req->query_len, req->query);
            close(fd);
            answer(req, 301, hdrs, n > 0 && (size_t)n < sizeof hdrs ? (size_t)n : 0);
            return 1;
        }
        index = openat(fd, "index.html", O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK |
                       O_NOFOLLOW);
        close(fd);
        fd = index;
        if (fd < 0 || fstat(fd, &st) < 0) {
            if (fd >= 0)
                close(fd);
            answer(req, 404, NULL, 0);
            return 1;
        }
        snprintf(rel, sizeof rel, "index.html");
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        answer(req, 404, NULL, 0);
        return 1;
    }
    snprintf(etag, sizeof etag, "\"%" PRIx64 "-%" PRIx64 "\"", (uint64_t)st.st_mtime,
             (uint64_t)st.st_size);
    pp_http_format_date(st.st_mtime, lastmod);
    n = snprintf(hdrs, sizeof hdrs, "ETag: %s\r\nLast-Modified: %s\r\nAccept-Ranges: bytes\r\n",
                 etag, lastmod);
    pp_http_response_init(&r, 200);
    if ((h = pp_http_find(req, "if-none-match", 13)) != NULL) {
        if (etag_matches(h, etag))
            r.status = 304;
    } else if ((h = pp_http_find(req, "if-modified-since", 17)) != NULL) {
        time_t since = parse_date(h);
        if (since != (time_t)-1 && st.st_mtime <= since)
            r.status = 304;
    }
    if (r.status == 200 && !head && (h = pp_http_find(req, "range", 5)) != NULL) {
        const pp_http_header *ir = pp_http_find(req, "if-range", 8);
        if (ir == NULL || header_is(ir, etag) || header_is(ir, lastmod))
            range = parse_range(h, (uint64_t)st.st_size, &first, &last);
    }
    if (range < 0) {
        n += snprintf(hdrs + n, sizeof hdrs - (size_t)n, "Content-Range: bytes */%" PRIu64 "\r\n",
                      (uint64_t)st.st_size);
        close(fd);
        answer(req, 416, hdrs, (size_t)n);
        return 1;
    }
    r.headers = hdrs;
    if (r.status == 304) {
        close(fd);
        r.headers_len = (size_t)n;
        (void)pp_http_respond(req, &r);
        return 1;
    }
    r.content_type = content_type(rel);
    r.content_type_len = strlen(r.content_type);
    r.file_fd = fd;
    r.file_offset = 0;
    r.file_count = (size_t)st.st_size;
    if (range > 0) {
        r.status = 206;
        n += snprintf(hdrs + n, sizeof hdrs - (size_t)n,
                      "Content-Range: bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64 "\r\n",
                      first, last, (uint64_t)st.st_size);
        r.file_offset = (off_t)first;
        r.file_count = (size_t)(last - first + 1);
    }
    r.headers_len = (size_t)n;
    (void)pp_http_respond(req, &r);
    return 1;
}
