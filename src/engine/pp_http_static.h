/* pp_http_static.h -- static files under a URL prefix, answered in the
 * engine (no owner callback, no Python): `--static /assets=./public`.
 *
 * A mount maps a prefix ("/assets", or "/" for everything) to a directory,
 * opened once when the mount is made; every worker's group may share one
 * mount (it is read-only after pp_http_static_new).  A request whose path
 * is the prefix or lies under it is answered by the mount, whatever the
 * file system holds:
 *
 *   path     percent-decoded, then split on '/'; "." and empty segments
 *            are skipped, and a ".." segment, a segment starting with "."
 *            (hidden files: .git, .env), a NUL or a bad escape is refused
 *            (404, or 400 for a bad escape).  The file is then opened
 *            relative to the directory with openat2(RESOLVE_BENEATH), so
 *            a symbolic link out of the root is refused by the kernel;
 *            where openat2 is missing, each segment is opened with
 *            O_NOFOLLOW (no symbolic links at all).
 *   kinds    regular files only; a directory is served as its index.html
 *            (redirected to the path with a '/' first, 301), never listed.
 *   methods  GET and HEAD; anything else 405 with Allow.
 *   caching  ETag (mtime and size) and Last-Modified on every answer;
 *            If-None-Match (then If-Modified-Since) answers 304.
 *   ranges   one byte range: 206 with Content-Range; an unsatisfiable one
 *            416; a list of ranges, a unit other than bytes or a range
 *            that does not parse is ignored (the whole file, 200), as RFC
 *            9110 allows; If-Range that does not match: the whole file.
 *   body     sent with sendfile(2).
 *
 * Content-Type comes from the extension (a built-in table; others are
 * application/octet-stream).
 */
#ifndef PP_HTTP_STATIC_H
#define PP_HTTP_STATIC_H

#include <stddef.h>

#include "pp_http.h"

typedef struct pp_http_static pp_http_static;

/* A mount of dir at prefix (which must start with '/'; a trailing '/' is
 * dropped).  Returns 0, -EINVAL for a bad prefix, -ENOMEM, or the errno
 * of opening dir (-ENOTDIR when it is not a directory). */
int pp_http_static_new(pp_http_static **out, const char *prefix, const char *dir);
void pp_http_static_free(pp_http_static *s);

/* Answers req when its path is under the mount: returns 1 (answered), or
 * 0 (not under the prefix; nothing done). */
int pp_http_static_serve(const pp_http_static *s, pp_http_request *req);

/* The group answers requests under any of mounts (tried in order) before
 * its owner sees them.  The array and mounts must outlive the group. */
void pp_http_group_set_static(pp_http_group *g, pp_http_static *const *mounts,
                              size_t n);

#endif /* PP_HTTP_STATIC_H */
