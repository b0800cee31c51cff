/* Walk the records section of a magic v2 record batch, natively.
 *
 * The produce path checks every record of every batch, as Kafka's LogValidator
 * does; in Python that walk costs several times the rest of the produce path.
 * kwire/protocol/records.py holds the reference (_check_records_python) with the
 * same algorithm, the same result and the error codes named there (RECORD_*).
 *
 * check_records(records, records_count, base_timestamp, timestamp_low, timestamp_high)
 *   -> (error, index, max_timestamp, first_bad_timestamp, first_null_key)
 *
 * error is 0 or a RECORD_* code, index the record it concerns. max_timestamp is the
 * largest record timestamp (-1 if none), first_bad_timestamp the first record whose
 * timestamp is not -1 and outside [timestamp_low, timestamp_high], first_null_key
 * the first record without a key; both -1 if there is none. Every read is checked
 * against the end of the buffer or of the record: nothing is read past them.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

enum {
    RECORD_OK = 0,
    RECORD_VARINT_TOO_LONG = 1,
    RECORD_TRUNCATED = 2,
    RECORD_NEGATIVE_LENGTH = 3,
    RECORD_INVALID_KEY_LENGTH = 4,
    RECORD_INVALID_VALUE_LENGTH = 5,
    RECORD_INVALID_HEADER_COUNT = 6,
    RECORD_INVALID_HEADER_KEY_LENGTH = 7,
    RECORD_INVALID_HEADER_VALUE_LENGTH = 8,
    RECORD_SIZE_MISMATCH = 9,
    RECORD_OFFSET_DELTA = 10,
    RECORD_COUNT_TOO_HIGH = 11,
    RECORD_BYTES_LEFT = 12,
};

/* A zigzag varint of at most max_bytes bytes (5: int32, 10: int64) before limit.
 * Java keeps only the low 32/64 bits of an over-long last byte, and so does this. */
static int
read_zigzag(const uint8_t **pp, const uint8_t *limit, int max_bytes, int64_t *out)
{
    const uint8_t *p = *pp;
    uint64_t n = 0;
    int shift = 0;
    for (int i = 0; i < max_bytes; i++) {
        if (p >= limit)
            return RECORD_TRUNCATED;
        uint8_t byte = *p++;
        n |= (uint64_t)(byte & 0x7F) << shift;
        if (byte < 0x80) {
            if (max_bytes == 5) {
                uint32_t m = (uint32_t)n;
                *out = (int32_t)((m >> 1) ^ (0u - (m & 1u)));
            } else {
                *out = (int64_t)((n >> 1) ^ (0ull - (n & 1ull)));
            }
            *pp = p;
            return RECORD_OK;
        }
        shift += 7;
    }
    return RECORD_VARINT_TOO_LONG;
}

#define VARINT(p, limit, out) read_zigzag(&(p), (limit), 5, (out))
#define VARLONG(p, limit, out) read_zigzag(&(p), (limit), 10, (out))

/* Skip a length-prefixed field; a length below `min_length` is `invalid`. */
static int
skip_field(const uint8_t **pp, const uint8_t *limit, int64_t min_length, int invalid, int *is_null)
{
    int64_t size;
    int error = VARINT(*pp, limit, &size);
    if (error)
        return error;
    if (size < min_length)
        return invalid;
    *is_null = size < 0;
    if (size > 0) {
        if (size > limit - *pp)
            return RECORD_TRUNCATED;
        *pp += size;
    }
    return RECORD_OK;
}

static PyObject *
check_records(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer view;
    Py_ssize_t records_count;
    long long base_timestamp, timestamp_low, timestamp_high;
    if (!PyArg_ParseTuple(args, "y*nLLL", &view, &records_count, &base_timestamp,
                          &timestamp_low, &timestamp_high))
        return NULL;

    const uint8_t *p = (const uint8_t *)view.buf;
    const uint8_t *end = p + view.len;
    int error = RECORD_OK;
    Py_ssize_t index = 0;
    int64_t max_timestamp = -1;
    Py_ssize_t first_bad_timestamp = -1, first_null_key = -1;

    for (; index < records_count; index++) {
        int64_t length, timestamp_delta, offset_delta, header_count;
        int is_null;
        if (p == end) {
            error = RECORD_COUNT_TOO_HIGH;
            break;
        }
        if ((error = VARINT(p, end, &length)))
            break;
        if (length < 0) {
            error = RECORD_NEGATIVE_LENGTH;
            break;
        }
        if (length > end - p) {
            error = RECORD_TRUNCATED;
            break;
        }
        const uint8_t *record_end = p + length;
        if (p >= record_end) {  /* no room for the attributes byte */
            error = RECORD_TRUNCATED;
            break;
        }
        p++;  /* attributes: unused in v2 records */
        if ((error = VARLONG(p, record_end, &timestamp_delta)))
            break;
        if ((error = VARINT(p, record_end, &offset_delta)))
            break;
        if (offset_delta != index) {
            error = RECORD_OFFSET_DELTA;
            break;
        }
        if ((error = skip_field(&p, record_end, -1, RECORD_INVALID_KEY_LENGTH, &is_null)))
            break;
        if (is_null && first_null_key < 0)
            first_null_key = index;
        if ((error = skip_field(&p, record_end, -1, RECORD_INVALID_VALUE_LENGTH, &is_null)))
            break;
        if ((error = VARINT(p, record_end, &header_count)))
            break;
        if (header_count < 0) {
            error = RECORD_INVALID_HEADER_COUNT;
            break;
        }
        /* Each header takes at least two bytes, so a lying count ends at record_end. */
        for (int64_t h = 0; h < header_count && !error; h++) {
            error = skip_field(&p, record_end, 0, RECORD_INVALID_HEADER_KEY_LENGTH, &is_null);
            if (!error)
                error = skip_field(&p, record_end, -1, RECORD_INVALID_HEADER_VALUE_LENGTH, &is_null);
        }
        if (error)
            break;
        if (p != record_end) {
            error = RECORD_SIZE_MISMATCH;
            break;
        }
        /* Java long arithmetic: wraps rather than overflows. */
        int64_t timestamp = (int64_t)((uint64_t)base_timestamp + (uint64_t)timestamp_delta);
        if (timestamp > max_timestamp)
            max_timestamp = timestamp;
        if (timestamp != -1 && first_bad_timestamp < 0
            && (timestamp < timestamp_low || timestamp > timestamp_high))
            first_bad_timestamp = index;
    }
    if (!error && p != end)
        error = RECORD_BYTES_LEFT;
    PyBuffer_Release(&view);
    return Py_BuildValue("inLnn", error, index, (long long)max_timestamp, first_bad_timestamp,
                         first_null_key);
}

static PyMethodDef methods[] = {
    {"check_records", check_records, METH_VARARGS,
     "check_records(records, records_count, base_timestamp, timestamp_low, timestamp_high)"
     " -> (error, index, max_timestamp, first_bad_timestamp, first_null_key)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_recordcheck",
    .m_doc = "The record walk of produce validation; see kwire/protocol/records.py.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__recordcheck(void)
{
    return PyModule_Create(&module);
}
