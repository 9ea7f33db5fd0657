/*
 * The common KServe V2 JSON inference request, read in one native pass.
 *
 * A V2 JSON body is mostly long arrays of numbers under "inputs"[i]."data". Reading them through a
 * general parser's Python objects (or its document proxies) costs more than running a small model,
 * because every step is interpreted. `parse` reads the whole body here: the document's small parts
 * become the Python objects any JSON parser would give (dict, list, str, int, float, bool, None),
 * and each flat "data" array of numbers becomes a pair of bytes objects, the values as float64 and
 * as float32, converted here without a Python object per element.
 *
 * It reads strictly: the text must be valid JSON (RFC 8259) and inside what it reads exactly as
 * Python's json module would, or it gives up by returning None and the caller reads the body the
 * general way, which words the error. It gives up on: string escapes, duplicate keys, integers of
 * more than 18 digits, floats beyond float64's range, "data" arrays that are nested or hold anything
 * but numbers, integers above 2**53 in "data", and nesting deeper than MAX_DEPTH.
 *
 * `split_data` and `read_floats` serve a body whose text outside its "data" arrays was read by `parse`
 * before: the first finds the arrays and cuts the text around them, the second reads one array as
 * `parse` reads it.
 *
 * Numbers become the correctly rounded float64 (as Python's float() gives): exact arithmetic when
 * the digits and the power of ten are small (Clinger's fast path), otherwise the Eisel-Lemire
 * algorithm over 128-bit powers of five (the table comes from Python's exact integers, see
 * `set_powers`), and for the rare numbers neither decides, CPython's own correctly rounded parser.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 64
#define POWER_MIN (-342)
#define POWER_MAX 308
#define POWER_COUNT (POWER_MAX - POWER_MIN + 1)
#define STACK_NUMBERS 1024

/* The 128-bit truncated mantissas of 5**q for q in [POWER_MIN, POWER_MAX], as (high, low) words.
 * Written once by set_powers before any parse, read-only afterwards. */
static uint64_t powers[POWER_COUNT][2];
static int powers_ready = 0;

typedef enum { CTX_PLAIN, CTX_TOP, CTX_INPUTS, CTX_INPUT, CTX_DATA } Context;

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
} Reader;

typedef struct {
    double value;
    int is_int;
    int64_t int_value;
    int int_fits;  /* an integer of at most 18 digits */
    int int_exact; /* an integer of magnitude at most 2**53: its float64 is exact */
} Number;

static inline void skip_space(Reader *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t')) {
        r->p++;
    }
}

static inline int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* Eisel-Lemire: w * 10**q as the correctly rounded float64, for w != 0 and q in the table's range.
 * Returns 0 where 128 bits of the power cannot decide (halfway cases, subnormals, overflow). */
static int eisel_lemire(uint64_t w, int64_t q, double *out)
{
    const uint64_t *power = powers[q - POWER_MIN];
    int lz = __builtin_clzll(w);
    w <<= lz;
    uint64_t exponent = (uint64_t)((((int64_t)217706 * q) >> 16) + 64 + 1023) - (uint64_t)lz;
    unsigned __int128 x = (unsigned __int128)w * power[0];
    uint64_t hi = (uint64_t)(x >> 64), lo = (uint64_t)x;
    if ((hi & 0x1FF) == 0x1FF && lo + w < w) {
        /* The low bits may carry into the result: widen with the power's second word. */
        unsigned __int128 y = (unsigned __int128)w * power[1];
        uint64_t y_hi = (uint64_t)(y >> 64), y_lo = (uint64_t)y;
        uint64_t merged_hi = hi, merged_lo = lo + y_hi;
        if (merged_lo < lo) {
            merged_hi++;
        }
        if ((merged_hi & 0x1FF) == 0x1FF && merged_lo + 1 == 0 && y_lo + w < w) {
            return 0;
        }
        hi = merged_hi;
        lo = merged_lo;
    }
    uint64_t msb = hi >> 63;
    uint64_t mantissa = hi >> (msb + 9);
    exponent -= 1 ^ msb;
    if (lo == 0 && (hi & 0x1FF) == 0 && (mantissa & 3) == 1) {
        return 0; /* exactly halfway as far as 128 bits can tell */
    }
    mantissa += mantissa & 1;
    mantissa >>= 1;
    if (mantissa >> 53) {
        mantissa >>= 1;
        exponent++;
    }
    if (exponent - 1 >= 0x7FF - 1) {
        return 0; /* subnormal, zero, or beyond the largest float64 */
    }
    uint64_t bits = exponent << 52 | (mantissa & 0x000FFFFFFFFFFFFFULL);
    memcpy(out, &bits, sizeof bits);
    return 1;
}

static const double exact_powers[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                      1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The text [start, end) of a valid JSON number as CPython reads it; 0 when it is out of range. */
static int slow_double(const unsigned char *start, const unsigned char *end, double *out)
{
    char small[128];
    Py_ssize_t size = end - start;
    char *text = size < (Py_ssize_t)sizeof small ? small : PyMem_Malloc((size_t)size + 1);
    if (text == NULL) {
        PyErr_NoMemory();
        return 0;
    }
    memcpy(text, start, (size_t)size);
    text[size] = '\0';
    double value = PyOS_string_to_double(text, NULL, NULL);
    if (text != small) {
        PyMem_Free(text);
    }
    if (value == -1.0 && PyErr_Occurred()) {
        return 0;
    }
    if (isinf(value)) {
        return 0;
    }
    *out = value;
    return 1;
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define EIGHT_AT_ONCE 1
/* Whether the eight bytes at p (little-endian) are all ASCII digits. */
static inline int eight_digits(const unsigned char *p, uint64_t *chunk)
{
    uint64_t value;
    memcpy(&value, p, sizeof value);
    *chunk = value;
    return !(((value + 0x4646464646464646ULL) | (value - 0x3030303030303030ULL)) & 0x8080808080808080ULL);
}

/* The number eight ASCII digits spell, three multiplications instead of eight. */
static inline uint64_t eight_digits_value(uint64_t chunk)
{
    const uint64_t mask = 0x000000FF000000FFULL;
    const uint64_t scale_high = 100 + (1000000ULL << 32);
    const uint64_t scale_low = 1 + (10000ULL << 32);
    chunk -= 0x3030303030303030ULL;
    chunk = (chunk * 10) + (chunk >> 8);
    return (((chunk & mask) * scale_high) + (((chunk >> 16) & mask) * scale_low)) >> 32;
}
#else
#define EIGHT_AT_ONCE 0
#endif

/* One JSON number at r->p; 0 when the text is not one (or its value is out of range). */
static int read_number(Reader *r, Number *out)
{
    const unsigned char *start = r->p, *p = r->p, *end = r->end;
    int negative = 0, is_int = 1;
    uint64_t w = 0; /* all the digits, wrapping when there are more than 19 (then `many` below) */
    int64_t exponent = 0;
    if (p < end && *p == '-') {
        negative = 1;
        p++;
    }
    const unsigned char *digits_start = p;
    if (p >= end || !is_digit(*p)) {
        return 0;
    }
    if (*p == '0') {
        p++;
        if (p < end && is_digit(*p)) {
            return 0; /* no leading zeros in JSON */
        }
    } else {
        while (p < end && is_digit(*p)) {
            w = w * 10 + (uint64_t)(*p - '0');
            p++;
        }
    }
    Py_ssize_t digits = p - digits_start;
    if (p < end && *p == '.') {
        is_int = 0;
        p++;
        const unsigned char *fraction = p;
#if EIGHT_AT_ONCE
        uint64_t chunk;
        while (end - p >= 8 && eight_digits(p, &chunk)) {
            w = w * 100000000ULL + eight_digits_value(chunk);
            p += 8;
        }
#endif
        while (p < end && is_digit(*p)) {
            w = w * 10 + (uint64_t)(*p - '0');
            p++;
        }
        if (p == fraction) {
            return 0;
        }
        exponent = -(int64_t)(p - fraction);
        digits += p - fraction;
    }
    const unsigned char *digits_end = p;
    if (p < end && (*p == 'e' || *p == 'E')) {
        is_int = 0;
        p++;
        int negative_power = 0;
        if (p < end && (*p == '+' || *p == '-')) {
            negative_power = *p == '-';
            p++;
        }
        if (p >= end || !is_digit(*p)) {
            return 0;
        }
        int64_t power = 0;
        while (p < end && is_digit(*p)) {
            if (power < 100000) {
                power = power * 10 + (*p - '0');
            }
            p++;
        }
        exponent += negative_power ? -power : power;
    }
    r->p = p;
    int many = 0;
    if (digits > 19) {
        /* Leading zeros (and the point among them) carry no value: count the digits after them. */
        const unsigned char *q = digits_start;
        while (q < digits_end && (*q == '0' || *q == '.')) {
            q++;
        }
        Py_ssize_t significant = 0;
        for (; q < digits_end; q++) {
            significant += *q != '.';
        }
        many = significant > 19;
    }
    out->is_int = is_int;
    if (is_int) {
        /* "-0" is the integer 0, whose float is +0.0. */
        out->int_fits = digits <= 18;
        out->int_value = negative ? -(int64_t)w : (int64_t)w;
        out->int_exact = !many && w <= ((uint64_t)1 << 53);
        /* An inexact integer's float is never read here (it is left to the general path). */
        out->value = w == 0 ? 0.0 : (negative ? -(double)w : (double)w);
        return 1;
    }
    out->int_fits = 0;
    double value;
    if (many) {
        return slow_double(start, p, &out->value);
    }
    if (w == 0) {
        value = 0.0;
    } else if (w <= ((uint64_t)1 << 53) && exponent >= -22 && exponent <= 22) {
        value = (double)w;
        value = exponent < 0 ? value / exact_powers[-exponent] : value * exact_powers[exponent];
    } else if (!powers_ready || exponent < POWER_MIN || exponent > POWER_MAX || !eisel_lemire(w, exponent, &value)) {
        return slow_double(start, p, &out->value);
    }
    out->value = negative ? -value : value;
    return 1;
}

/* Past the opening bracket at r->p and the space after it; 1 when `close` follows at once (then past
 * it too): an empty object or array. */
static int opens_empty(Reader *r, unsigned char close)
{
    r->p++;
    skip_space(r);
    if (r->p < r->end && *r->p == close) {
        r->p++;
        return 1;
    }
    return 0;
}

/* After a member or an element: 1 past a comma (and the space after it), 0 past `close`, -1 for
 * anything else. */
static int next_item(Reader *r, unsigned char close)
{
    skip_space(r);
    if (r->p < r->end && *r->p == ',') {
        r->p++;
        skip_space(r);
        return 1;
    }
    if (r->p < r->end && *r->p == close) {
        r->p++;
        return 0;
    }
    return -1;
}

static PyObject *read_value(Reader *r, int depth, Context context);

/* A flat array of numbers at r->p ('['): (float64 bytes, float32 bytes or None when a value is beyond
 * float32's range). NULL without an exception to give up. */
static PyObject *read_numbers(Reader *r)
{
    double stack[STACK_NUMBERS];
    double *values = stack;
    Py_ssize_t count = 0, capacity = STACK_NUMBERS;
    PyObject *result = NULL;
    if (!opens_empty(r, ']')) {
        for (;;) {
            Number number;
            if (!read_number(r, &number)) {
                goto done;
            }
            /* Integers above 2**53 are left to the general path, which converts them its own way. */
            if (number.is_int && !number.int_exact) {
                goto done;
            }
            if (count == capacity) {
                Py_ssize_t larger = capacity * 2;
                double *grown = values == stack ? PyMem_Malloc((size_t)larger * sizeof(double))
                                                : PyMem_Realloc(values, (size_t)larger * sizeof(double));
                if (grown == NULL) {
                    PyErr_NoMemory();
                    goto done;
                }
                if (values == stack) {
                    memcpy(grown, stack, sizeof stack);
                }
                values = grown;
                capacity = larger;
            }
            values[count++] = number.value;
            int more = next_item(r, ']');
            if (more < 0) {
                goto done;
            }
            if (!more) {
                break;
            }
        }
    }
    PyObject *wide = PyBytes_FromStringAndSize((const char *)values, count * (Py_ssize_t)sizeof(double));
    if (wide == NULL) {
        goto done;
    }
    PyObject *narrow = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(float));
    if (narrow == NULL) {
        Py_DECREF(wide);
        goto done;
    }
    float *floats = (float *)PyBytes_AS_STRING(narrow);
    int overflow = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        floats[i] = (float)values[i];
        overflow |= isinf(floats[i]);
    }
    if (overflow) {
        Py_DECREF(narrow);
        narrow = Py_NewRef(Py_None);
    }
    result = PyTuple_Pack(2, wide, narrow);
    Py_DECREF(wide);
    Py_DECREF(narrow);
done:
    if (values != stack) {
        PyMem_Free(values);
    }
    return result;
}

/* A string at r->p ('"'), without escapes. */
static PyObject *read_string(Reader *r)
{
    const unsigned char *start = ++r->p, *p = start;
    while (p < r->end && *p != '"') {
        if (*p == '\\' || *p < 0x20) {
            return NULL;
        }
        p++;
    }
    if (p >= r->end) {
        return NULL;
    }
    r->p = p + 1;
    PyObject *text = PyUnicode_DecodeUTF8((const char *)start, p - start, "strict");
    if (text == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
    }
    return text;
}

static int is_key(const unsigned char *start, const unsigned char *end, const char *key)
{
    size_t size = strlen(key);
    return (size_t)(end - start) == size && memcmp(start, key, size) == 0;
}

static PyObject *read_object(Reader *r, int depth, Context context)
{
    PyObject *object = PyDict_New();
    if (object == NULL) {
        return NULL;
    }
    if (opens_empty(r, '}')) {
        return object;
    }
    for (;;) {
        if (r->p >= r->end || *r->p != '"') {
            goto fail;
        }
        const unsigned char *key_start = r->p + 1;
        PyObject *key = read_string(r);
        if (key == NULL) {
            goto fail;
        }
        const unsigned char *key_end = r->p - 1;
        Context inner = CTX_PLAIN;
        if (context == CTX_TOP && is_key(key_start, key_end, "inputs")) {
            inner = CTX_INPUTS;
        } else if (context == CTX_INPUT && is_key(key_start, key_end, "data")) {
            inner = CTX_DATA;
        }
        skip_space(r);
        if (r->p >= r->end || *r->p != ':') {
            Py_DECREF(key);
            goto fail;
        }
        r->p++;
        skip_space(r);
        PyObject *value = read_value(r, depth + 1, inner);
        if (value == NULL) {
            Py_DECREF(key);
            goto fail;
        }
        /* A key given twice: json keeps the last, other parsers refuse; the general path decides. */
        int known = PyDict_Contains(object, key);
        int stored = known == 0 ? PyDict_SetItem(object, key, value) : -1;
        Py_DECREF(key);
        Py_DECREF(value);
        int more = stored < 0 ? -1 : next_item(r, '}');
        if (more < 0) {
            goto fail;
        }
        if (!more) {
            return object;
        }
    }
fail:
    Py_DECREF(object);
    return NULL;
}

static PyObject *read_array(Reader *r, int depth, Context context)
{
    PyObject *array = PyList_New(0);
    if (array == NULL) {
        return NULL;
    }
    Context inner = context == CTX_INPUTS ? CTX_INPUT : CTX_PLAIN;
    if (opens_empty(r, ']')) {
        return array;
    }
    for (;;) {
        PyObject *value = read_value(r, depth + 1, inner);
        if (value == NULL) {
            goto fail;
        }
        int appended = PyList_Append(array, value);
        Py_DECREF(value);
        int more = appended < 0 ? -1 : next_item(r, ']');
        if (more < 0) {
            goto fail;
        }
        if (!more) {
            return array;
        }
    }
fail:
    Py_DECREF(array);
    return NULL;
}

static PyObject *read_literal(Reader *r, const char *text, PyObject *value)
{
    size_t size = strlen(text);
    if ((size_t)(r->end - r->p) < size || memcmp(r->p, text, size) != 0) {
        return NULL;
    }
    r->p += size;
    return Py_NewRef(value);
}

/* Any JSON value at r->p; NULL to give up (with an exception set only for a failed allocation). */
static PyObject *read_value(Reader *r, int depth, Context context)
{
    if (depth > MAX_DEPTH || r->p >= r->end) {
        return NULL;
    }
    switch (*r->p) {
    case '{':
        return read_object(r, depth, context == CTX_INPUT ? CTX_INPUT : CTX_PLAIN);
    case '[':
        return context == CTX_DATA ? read_numbers(r) : read_array(r, depth, context);
    case '"':
        return read_string(r);
    case 't':
        return read_literal(r, "true", Py_True);
    case 'f':
        return read_literal(r, "false", Py_False);
    case 'n':
        return read_literal(r, "null", Py_None);
    default: {
        Number number;
        if (!read_number(r, &number)) {
            return NULL;
        }
        if (!number.is_int) {
            return PyFloat_FromDouble(number.value);
        }
        return number.int_fits ? PyLong_FromLongLong(number.int_value) : NULL;
    }
    }
}

/* None, the answer for text not read here; NULL when the reason was a failed allocation. */
static PyObject *gave_up(void)
{
    if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_MemoryError)) {
        PyErr_Clear();
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *parse(PyObject *module, PyObject *body)
{
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(body, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    Reader r = {(const unsigned char *)view.buf, (const unsigned char *)view.buf + view.len};
    PyObject *document = NULL;
    skip_space(&r);
    if (r.p < r.end && *r.p == '{') {
        document = read_object(&r, 1, CTX_TOP);
        if (document != NULL) {
            skip_space(&r);
            if (r.p != r.end) {
                Py_CLEAR(document);
            }
        }
    }
    PyBuffer_Release(&view);
    return document != NULL ? document : gave_up();
}

/* Where the "data" arrays of a body lie, found without reading the rest: the key "data" (a quote,
 * the four letters, a quote), optional space, a colon, optional space and '['; the array ends at the
 * first ']' after it (a flat array of numbers holds no other). Gives (the byte segments before, between
 * and after the arrays, the arrays' (start, end) offsets flat), or None when there is no such array or
 * one is not closed. It reads nothing else: the caller compares the segments with those of a body that
 * `parse` read whole, and reads the arrays with `read_floats`. */
static PyObject *split_data(PyObject *module, PyObject *body)
{
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(body, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *base = (const unsigned char *)view.buf, *end = base + view.len;
    const unsigned char *p = base, *segment = base;
    PyObject *segments = PyList_New(0), *spans = PyList_New(0), *result = NULL;
    if (segments == NULL || spans == NULL) {
        goto done;
    }
    for (;;) {
        const unsigned char *quote = memchr(p, '"', (size_t)(end - p));
        if (quote == NULL || end - quote < 6) {
            break;
        }
        p = quote + 1;
        if (memcmp(p, "data\"", 5) != 0) {
            continue;
        }
        Reader r = {quote + 6, end};
        skip_space(&r);
        if (r.p >= end || *r.p != ':') {
            continue;
        }
        r.p++;
        skip_space(&r);
        if (r.p >= end || *r.p != '[') {
            continue;
        }
        const unsigned char *close = memchr(r.p, ']', (size_t)(end - r.p));
        if (close == NULL) {
            goto done; /* None */
        }
        PyObject *before = PyBytes_FromStringAndSize((const char *)segment, r.p - segment);
        PyObject *start = PyLong_FromSsize_t(r.p - base), *stop = PyLong_FromSsize_t(close + 1 - base);
        int failed = before == NULL || start == NULL || stop == NULL || PyList_Append(segments, before) < 0 ||
                     PyList_Append(spans, start) < 0 || PyList_Append(spans, stop) < 0;
        Py_XDECREF(before);
        Py_XDECREF(start);
        Py_XDECREF(stop);
        if (failed) {
            goto done;
        }
        segment = p = close + 1;
    }
    if (PyList_GET_SIZE(spans) > 0) {
        PyObject *after = PyBytes_FromStringAndSize((const char *)segment, end - segment);
        if (after == NULL || PyList_Append(segments, after) < 0) {
            Py_XDECREF(after);
            goto done;
        }
        Py_DECREF(after);
        PyObject *segment_tuple = PyList_AsTuple(segments), *span_tuple = PyList_AsTuple(spans);
        if (segment_tuple != NULL && span_tuple != NULL) {
            result = PyTuple_Pack(2, segment_tuple, span_tuple);
        }
        Py_XDECREF(segment_tuple);
        Py_XDECREF(span_tuple);
    }
done:
    Py_XDECREF(segments);
    Py_XDECREF(spans);
    PyBuffer_Release(&view);
    return result != NULL ? result : gave_up();
}

/* The flat array of numbers that spans body[start:stop] exactly, as `parse` reads a "data" array:
 * (float64 bytes, float32 bytes or None); None when the span is anything else. */
static PyObject *read_floats(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "read_floats(body, start, stop)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]), stop = PyLong_AsSsize_t(args[2]);
    if ((start == -1 || stop == -1) && PyErr_Occurred()) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *numbers = NULL;
    if (0 <= start && start < stop && stop <= view.len && ((const unsigned char *)view.buf)[start] == '[') {
        Reader r = {(const unsigned char *)view.buf + start, (const unsigned char *)view.buf + stop};
        numbers = read_numbers(&r);
        if (numbers != NULL && r.p != r.end) {
            Py_CLEAR(numbers);
        }
    }
    PyBuffer_Release(&view);
    return numbers != NULL ? numbers : gave_up();
}

static PyObject *set_powers(PyObject *module, PyObject *table)
{
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(table, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (view.len != (Py_ssize_t)sizeof powers) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "the table must hold %d pairs of 64-bit words", POWER_COUNT);
        return NULL;
    }
    memcpy(powers, view.buf, sizeof powers);
    powers_ready = 1;
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *read_float(PyObject *module, PyObject *text)
{
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(text, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    Reader r = {(const unsigned char *)view.buf, (const unsigned char *)view.buf + view.len};
    Number number;
    int ok = read_number(&r, &number) && r.p == r.end;
    if (ok && number.is_int && !number.int_exact) {
        ok = slow_double((const unsigned char *)view.buf, r.end, &number.value); /* rounded as CPython rounds */
    }
    PyBuffer_Release(&view);
    return ok ? PyFloat_FromDouble(number.value) : gave_up();
}

static PyMethodDef methods[] = {
    {"parse", parse, METH_O, "A V2 inference request's JSON body as Python objects, or None to read it the general way."},
    {"set_powers", set_powers, METH_O, "Install the 128-bit powers of five that number parsing uses."},
    {"read_float", read_float, METH_O, "One JSON number's text as the float64 parse gives it (None if not one)."},
    {"split_data", split_data, METH_O, "The segments of a body around its \"data\" arrays, and where they lie."},
    {"read_floats", (PyCFunction)(void (*)(void))read_floats, METH_FASTCALL, "A flat number array spanning body[start:stop], as parse reads one."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_infer_json",
    .m_doc = "The common V2 JSON inference request, read natively.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__infer_json(void) { return PyModule_Create(&module_definition); }
