/* The common case of an HTTP/1.1 head, read in one pass in C.
 *
 * request_head(data) and response_head(data) accept only a strict subset of what llhttp
 * accepts and give it the same meaning; anything else returns None and the engine hands the
 * bytes to httptools as before. The subset is defined, as regular expressions, by the
 * reference in tests/queueproxy/test_fasthead.py, which checks this module against it and
 * against httptools on generated heads.
 *
 * No state is kept between calls apart from the table configure() installs once.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* character classes */
#define C_TOKEN 1   /* tchar */
#define C_VCHAR 2   /* visible ASCII, 0x21-0x7e */
#define C_TARGET 4  /* RFC 3986 unreserved, sub-delims, ':', '@', '/', '?', '%' */
static unsigned char cls[256];

static void init_classes(void)
{
    const char *tok = "!#$%&'*+-.^_`|~";
    const char *tgt = "-._~!$&'()*+,;=:@/?%";
    for (int c = 0x21; c <= 0x7e; c++)
        cls[c] |= C_VCHAR;
    for (int c = 0; c < 256; c++)
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
            cls[c] |= C_TOKEN | C_TARGET;
    for (const char *p = tok; *p; p++)
        cls[(unsigned char)*p] |= C_TOKEN;
    for (const char *p = tgt; *p; p++)
        cls[(unsigned char)*p] |= C_TARGET;
}

static inline int is_blank(unsigned char c) { return c == ' ' || c == '\t'; }

/* One header line at s[p]: "Name: value\r\n", value visible ASCII with inner blanks, no
 * leading or trailing blank, possibly empty. Sets the spans and returns the offset after the
 * line, or -1 when the line is not in the subset (or the head does not end in data). */
static Py_ssize_t header_line(const unsigned char *s, Py_ssize_t n, Py_ssize_t p,
                              Py_ssize_t *name_end, Py_ssize_t *value_start, Py_ssize_t *value_end)
{
    Py_ssize_t q = p;
    while (q < n && (cls[s[q]] & C_TOKEN))
        q++;
    if (q == p || q + 1 >= n || s[q] != ':' || s[q + 1] != ' ')
        return -1;
    *name_end = q;
    q += 2;
    *value_start = q;
    while (q < n && ((cls[s[q]] & C_VCHAR) || is_blank(s[q])))
        q++;
    if (q + 1 >= n || s[q] != '\r' || s[q + 1] != '\n')
        return -1;
    if (q > *value_start && (is_blank(s[*value_start]) || is_blank(s[q - 1])))
        return -1;
    *value_end = q;
    return q + 2;
}

/* ASCII case-insensitive equality of s[0:len] with the lower-case word w */
static inline int name_is(const unsigned char *s, Py_ssize_t len, const char *w)
{
    Py_ssize_t i = 0;
    for (; i < len; i++) {
        unsigned char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c += 32;
        if (w[i] == 0 || (unsigned char)w[i] != c)
            return 0;
    }
    return w[i] == 0;
}

/* Connection tokens as llhttp reads them: bit 1 close, 2 keep-alive, 4 upgrade; -1 when a
 * token is not a plain token. */
static int connection_flags(const unsigned char *s, Py_ssize_t n)
{
    int flags = 0;
    Py_ssize_t p = 0;
    while (p <= n) {
        Py_ssize_t e = p;
        while (e < n && s[e] != ',')
            e++;
        Py_ssize_t a = p, b = e;
        while (a < b && is_blank(s[a]))
            a++;
        while (b > a && is_blank(s[b - 1]))
            b--;
        for (Py_ssize_t i = a; i < b; i++)
            if (!(cls[s[i]] & C_TOKEN))
                return -1;
        if (name_is(s + a, b - a, "close"))
            flags |= 1;
        else if (name_is(s + a, b - a, "keep-alive"))
            flags |= 2;
        else if (name_is(s + a, b - a, "upgrade"))
            flags |= 4;
        p = e + 1;
    }
    return flags;
}

static inline int keep_alive(int minor, int flags)
{
    return minor == 1 ? !(flags & 1) : (flags & 2) != 0;
}

/* ---- configuration from queueproxy.http1 ------------------------------------------- */

static PyObject *special_index;  /* dict: lower-case name -> index into Exchange.special */
static Py_ssize_t n_special;
static Py_ssize_t i_host, i_connection, i_xff, i_xff_first, i_content_length;
static Py_ssize_t i_upgrade, i_transfer_encoding;
static PyObject *methods[7];
static const char *method_names[7] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"};
static PyObject *v10, *v11;

static PyObject *configure(PyObject *self, PyObject *args)
{
    PyObject *index;
    Py_ssize_t n, at[7];
    static const char *what[7] = {"host", "connection", "xff", "xff_first", "content_length", "upgrade",
                                  "transfer_encoding"};
    if (!PyArg_ParseTuple(args, "O!nnnnnnnn:configure", &PyDict_Type, &index, &n, &at[0], &at[1], &at[2],
                          &at[3], &at[4], &at[5], &at[6]))
        return NULL;
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "configure(): n_special is %zd, it must be at least 0", n);
        return NULL;
    }
    for (int k = 0; k < 7; k++)
        if (at[k] < 0 || at[k] >= n) {
            PyErr_Format(PyExc_ValueError, "configure(): %s is %zd, it must be in [0, %zd)", what[k], at[k], n);
            return NULL;
        }
    /* Every index in the table must fit the list request_head() builds. */
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(index, &pos, &key, &value)) {
        Py_ssize_t i = PyLong_Check(value) ? PyLong_AsSsize_t(value) : -1;
        if (i == -1 && PyErr_Occurred())
            return NULL;
        if (!PyBytes_Check(key) || i < 0 || i >= n) {
            PyErr_Format(PyExc_ValueError, "configure(): special[%R] = %R, it must map bytes to [0, %zd)",
                         key, value, n);
            return NULL;
        }
    }
    n_special = n;
    i_host = at[0];
    i_connection = at[1];
    i_xff = at[2];
    i_xff_first = at[3];
    i_content_length = at[4];
    i_upgrade = at[5];
    i_transfer_encoding = at[6];
    Py_INCREF(index);
    Py_XSETREF(special_index, index);
    Py_RETURN_NONE;
}

/* ---- requests --------------------------------------------------------------------- */

/* Keep a special header's value as queueproxy.http1.note_special does. Returns 0 to go on,
 * 1 when the head is not for this path (a second Host, a body, an upgrade), -1 on error. */
static int note_special(PyObject *sp, Py_ssize_t i, PyObject *value)
{
    if (i == i_upgrade || i == i_transfer_encoding)
        return 1;
    PyObject *prior = PyList_GET_ITEM(sp, i);
    if (i == i_content_length) {
        if (prior != Py_None || PyBytes_GET_SIZE(value) != 1 || PyBytes_AS_STRING(value)[0] != '0')
            return 1;
    }
    if (prior == Py_None) {
        Py_INCREF(value);
        PyList_SET_ITEM(sp, i, value);
        Py_DECREF(Py_None);
        return 0;
    }
    if (i == i_host)
        return 1;
    if (i == i_xff || i == i_connection) {
        if (i == i_xff && PyList_GET_ITEM(sp, i_xff_first) == Py_None) {
            Py_INCREF(prior);
            PyList_SET_ITEM(sp, i_xff_first, prior);
            Py_DECREF(Py_None);
        }
        Py_ssize_t a = PyBytes_GET_SIZE(prior), b = PyBytes_GET_SIZE(value);
        PyObject *joined = PyBytes_FromStringAndSize(NULL, a + 2 + b);
        if (joined == NULL)
            return -1;
        char *d = PyBytes_AS_STRING(joined);
        memcpy(d, PyBytes_AS_STRING(prior), a);
        memcpy(d + a, ", ", 2);
        memcpy(d + a + 2, PyBytes_AS_STRING(value), b);
        PyList_SET_ITEM(sp, i, joined);
        Py_DECREF(prior);
    }
    return 0;
}

static PyObject *request_head(PyObject *self, PyObject *data)
{
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "request_head() takes bytes");
        return NULL;
    }
    if (special_index == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure() was not called");
        return NULL;
    }
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data), p = 0;

    while (p < n && s[p] >= 'A' && s[p] <= 'Z')
        p++;
    PyObject *method = NULL;
    for (int k = 0; k < 7; k++)
        if ((Py_ssize_t)strlen(method_names[k]) == p && memcmp(s, method_names[k], p) == 0)
            method = methods[k];
    if (method == NULL || p >= n || s[p] != ' ')
        Py_RETURN_NONE;
    Py_ssize_t t0 = ++p;
    if (p >= n || s[p] != '/')
        Py_RETURN_NONE;
    while (p < n && (cls[s[p]] & C_TARGET))
        p++;
    Py_ssize_t t1 = p;
    if (n - p < 11 || memcmp(s + p, " HTTP/1.", 8) != 0 || (s[p + 8] != '0' && s[p + 8] != '1')
        || s[p + 9] != '\r' || s[p + 10] != '\n')
        Py_RETURN_NONE;
    int minor = s[p + 8] - '0';
    p += 11;

    PyObject *headers = NULL, *sp = NULL, *target = NULL, *result = NULL, *conn;
    int flags = 0;
    headers = PyList_New(0);
    sp = PyList_New(n_special);
    if (headers == NULL || sp == NULL)
        goto error;
    for (Py_ssize_t k = 0; k < n_special; k++) {
        Py_INCREF(Py_None);
        PyList_SET_ITEM(sp, k, Py_None);
    }
    for (;;) {
        if (n - p >= 2 && s[p] == '\r' && s[p + 1] == '\n') {
            if (p + 2 != n)  /* bytes after the head: a body or a pipelined request */
                goto not_here;
            break;
        }
        Py_ssize_t ne, vs, ve;
        Py_ssize_t next = header_line(s, n, p, &ne, &vs, &ve);
        if (next < 0)
            goto not_here;
        PyObject *name = PyBytes_FromStringAndSize((const char *)s + p, ne - p);
        PyObject *lname = PyBytes_FromStringAndSize(NULL, ne - p);
        PyObject *value = PyBytes_FromStringAndSize((const char *)s + vs, ve - vs);
        if (name == NULL || lname == NULL || value == NULL) {
            Py_XDECREF(name);
            Py_XDECREF(lname);
            Py_XDECREF(value);
            goto error;
        }
        unsigned char *l = (unsigned char *)PyBytes_AS_STRING(lname);
        for (Py_ssize_t k = 0; k < ne - p; k++) {
            unsigned char c = s[p + k];
            l[k] = (c >= 'A' && c <= 'Z') ? c + 32 : c;
        }
        if (name_is(s + p, ne - p, "proxy-connection")) {  /* llhttp reads it as Connection */
            Py_DECREF(name);
            Py_DECREF(lname);
            Py_DECREF(value);
            goto not_here;
        }
        PyObject *triple = PyTuple_Pack(3, name, lname, value);
        Py_DECREF(name);
        if (triple == NULL || PyList_Append(headers, triple) < 0) {
            Py_XDECREF(triple);
            Py_DECREF(lname);
            Py_DECREF(value);
            goto error;
        }
        Py_DECREF(triple);
        PyObject *idx = PyDict_GetItemWithError(special_index, lname);
        Py_DECREF(lname);
        if (idx == NULL && PyErr_Occurred()) {
            Py_DECREF(value);
            goto error;
        }
        if (idx != NULL) {
            Py_ssize_t i = PyLong_AsSsize_t(idx);
            if (i < 0 || i >= n_special) {
                Py_DECREF(value);
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_ValueError, "special header index out of range");
                goto error;
            }
            int r = note_special(sp, i, value);
            if (r != 0) {
                Py_DECREF(value);
                if (r < 0)
                    goto error;
                goto not_here;
            }
        }
        Py_DECREF(value);
        p = next;
    }
    if (minor == 1 && PyList_GET_ITEM(sp, i_host) == Py_None)
        goto not_here;  /* the parser's path answers 400 */
    conn = PyList_GET_ITEM(sp, i_connection);
    if (conn != Py_None) {
        flags = connection_flags((const unsigned char *)PyBytes_AS_STRING(conn), PyBytes_GET_SIZE(conn));
        if (flags < 0 || (flags & 4))
            goto not_here;
    }
    target = PyBytes_FromStringAndSize((const char *)s + t0, t1 - t0);
    if (target == NULL)
        goto error;
    result = Py_BuildValue("(OOOOOO)", method, target, minor ? v11 : v10, headers, sp,
                           keep_alive(minor, flags) ? Py_True : Py_False);
error:
    Py_XDECREF(headers);
    Py_XDECREF(sp);
    Py_XDECREF(target);
    return result;
not_here:
    Py_XDECREF(headers);
    Py_XDECREF(sp);
    Py_RETURN_NONE;
}

/* ---- responses -------------------------------------------------------------------- */

static const char *hop_by_hop[] = {
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "proxy-authenticate", "proxy-authorization", NULL,
};
enum { HOP_CONNECTION = 1, HOP_PROXY_CONNECTION = 3, HOP_TRANSFER_ENCODING = 6 };  /* index + 1 */

#define MAX_RUNS 64

/* Remember head[start:end] as kept lines; -1 when there are too many runs for this path. */
static int keep_run(Py_ssize_t runs[][2], int *nruns, Py_ssize_t *kept, Py_ssize_t start, Py_ssize_t end)
{
    if (end == start)
        return 0;
    if (*nruns == MAX_RUNS)
        return -1;
    runs[*nruns][0] = start;
    runs[*nruns][1] = end;
    (*nruns)++;
    *kept += end - start;
    return 0;
}

static PyObject *response_head(PyObject *self, PyObject *data)
{
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "response_head() takes bytes");
        return NULL;
    }
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    if (n < 13 || memcmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') || s[8] != ' '
        || s[9] < '2' || s[9] > '5' || s[10] < '0' || s[10] > '9' || s[11] < '0' || s[11] > '9'
        || s[12] != ' ')
        Py_RETURN_NONE;
    int minor = s[7] - '0';
    int status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    if (status == 204 || status == 304)  /* no body whatever the head says */
        Py_RETURN_NONE;
    Py_ssize_t r0 = 13, p = 13;
    while (p < n && ((cls[s[p]] & C_VCHAR) || is_blank(s[p])))
        p++;
    if (n - p < 2 || s[p] != '\r' || s[p + 1] != '\n')
        Py_RETURN_NONE;
    Py_ssize_t r1 = p;
    p += 2;

    /* kept lines: runs of the head between dropped hop-by-hop lines */
    Py_ssize_t runs[MAX_RUNS][2];
    int nruns = 0;
    Py_ssize_t run_start = p, kept = 0;
    int flags = 0;
    long long length = -1;
    for (;;) {
        if (n - p >= 2 && s[p] == '\r' && s[p + 1] == '\n')
            break;
        Py_ssize_t ne, vs, ve;
        Py_ssize_t next = header_line(s, n, p, &ne, &vs, &ve);
        if (next < 0)
            Py_RETURN_NONE;
        int hop = 0;
        for (int k = 0; hop_by_hop[k] != NULL; k++)
            if (name_is(s + p, ne - p, hop_by_hop[k])) {
                hop = k + 1;
                break;
            }
        if (hop) {
            if (hop == HOP_CONNECTION) {  /* only a plain close or keep-alive here */
                if (name_is(s + vs, ve - vs, "close"))
                    flags |= 1;
                else if (name_is(s + vs, ve - vs, "keep-alive"))
                    flags |= 2;
                else
                    Py_RETURN_NONE;
            } else if (hop == HOP_PROXY_CONNECTION || hop == HOP_TRANSFER_ENCODING) {
                Py_RETURN_NONE;  /* llhttp reads Proxy-Connection as Connection; chunked: the parser's */
            }
            if (keep_run(runs, &nruns, &kept, run_start, p) < 0)
                Py_RETURN_NONE;
            run_start = next;
        } else if (name_is(s + p, ne - p, "content-length")) {
            if (length >= 0 || ve == vs || ve - vs > 15)
                Py_RETURN_NONE;
            length = 0;
            for (Py_ssize_t k = vs; k < ve; k++) {
                if (s[k] < '0' || s[k] > '9')
                    Py_RETURN_NONE;
                length = length * 10 + (s[k] - '0');
            }
        }
        p = next;
    }
    if (length < 0 || keep_run(runs, &nruns, &kept, run_start, p) < 0)
        Py_RETURN_NONE;
    PyObject *lines = PyBytes_FromStringAndSize(NULL, kept);
    if (lines == NULL)
        return NULL;
    char *d = PyBytes_AS_STRING(lines);
    for (int k = 0; k < nruns; k++) {
        memcpy(d, s + runs[k][0], runs[k][1] - runs[k][0]);
        d += runs[k][1] - runs[k][0];
    }
    PyObject *reason = PyBytes_FromStringAndSize((const char *)s + r0, r1 - r0);
    if (reason == NULL) {
        Py_DECREF(lines);
        return NULL;
    }
    return Py_BuildValue("(iNnNLO)", status, reason, p + 2, lines, length,
                         keep_alive(minor, flags) ? Py_True : Py_False);
}

static PyObject *hop_by_hop_names(PyObject *self, PyObject *unused)
{
    PyObject *names = PyList_New(0);
    if (names == NULL)
        return NULL;
    for (int k = 0; hop_by_hop[k] != NULL; k++) {
        PyObject *b = PyBytes_FromString(hop_by_hop[k]);
        if (b == NULL || PyList_Append(names, b) < 0) {
            Py_XDECREF(b);
            Py_DECREF(names);
            return NULL;
        }
        Py_DECREF(b);
    }
    PyObject *set = PyFrozenSet_New(names);
    Py_DECREF(names);
    return set;
}

static PyMethodDef fasthead_methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(special, n_special, host, connection, xff, xff_first, content_length, upgrade,"
     " transfer_encoding): the special-header table of queueproxy.http1; ValueError when an index"
     " falls outside [0, n_special)"},
    {"request_head", request_head, METH_O,
     "request_head(data) -> (method, target, version, headers, special, keep_alive) or None"},
    {"response_head", response_head, METH_O,
     "response_head(data) -> (status, reason, body_start, kept_lines, content_length, keep_alive)"
     " or None"},
    {"hop_by_hop", hop_by_hop_names, METH_NOARGS, "the response header names dropped as hop-by-hop"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fasthead_module = {
    PyModuleDef_HEAD_INIT, "queueproxy._fasthead",
    "The common case of an HTTP/1.1 head in one pass.", -1, fasthead_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fasthead(void)
{
    init_classes();
    for (int k = 0; k < 7; k++) {
        methods[k] = PyBytes_FromString(method_names[k]);
        if (methods[k] == NULL)
            return NULL;
    }
    v10 = PyBytes_FromString("1.0");
    v11 = PyBytes_FromString("1.1");
    if (v10 == NULL || v11 == NULL)
        return NULL;
    return PyModule_Create(&fasthead_module);
}
