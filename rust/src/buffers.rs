//! Raw, zero-copy access to Python buffers (pyarrow buffers, numpy arrays).
//!
//! Views are taken with the GIL held and released on drop (again with the GIL held);
//! the slices they hand out are used while the GIL is released.

use std::ffi::c_void;
use std::mem::MaybeUninit;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;

use crate::text::{Offsets, TextColumn};

pub struct RawBuffer {
    view: Box<ffi::Py_buffer>,
}

// SAFETY: the view pins the exporter's memory until it is released; the pointer is
// only read (or written, for outputs the caller hands over) while this value lives.
unsafe impl Send for RawBuffer {}
unsafe impl Sync for RawBuffer {}

impl RawBuffer {
    /// A contiguous view of `obj`; `writable` asks the exporter for write access.
    pub fn get(obj: &Bound<'_, PyAny>, writable: bool, what: &str) -> PyResult<Self> {
        let mut view: Box<MaybeUninit<ffi::Py_buffer>> = Box::new(MaybeUninit::uninit());
        let flags = if writable {
            ffi::PyBUF_WRITABLE
        } else {
            ffi::PyBUF_SIMPLE
        };
        // SAFETY: `view` is valid storage for a Py_buffer; on success CPython fills it.
        let rc = unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), flags) };
        if rc == -1 {
            let cause = PyErr::fetch(obj.py());
            let err = PyTypeError::new_err(format!(
                "{what} must be a contiguous{} buffer (a numpy array or Arrow buffer)",
                if writable { ", writable" } else { "" }
            ));
            err.set_cause(obj.py(), Some(cause));
            return Err(err);
        }
        // SAFETY: PyObject_GetBuffer succeeded, so the view is initialized.
        let view = unsafe { Box::from_raw(Box::into_raw(view) as *mut ffi::Py_buffer) };
        Ok(RawBuffer { view })
    }

    fn len_bytes(&self) -> usize {
        self.view.len as usize
    }

    /// The buffer as a slice of `T`; the byte length must be a multiple of `T`'s size.
    pub fn slice<T: Copy>(&self, what: &str) -> PyResult<&[T]> {
        let (ptr, size) = self.checked::<T>(what)?;
        if size == 0 {
            return Ok(&[]);
        }
        // SAFETY: checked length and alignment; the view keeps the memory alive and unmoved.
        Ok(unsafe { std::slice::from_raw_parts(ptr as *const T, size) })
    }

    /// The buffer as a mutable slice of `T` (the view was taken writable).
    pub fn slice_mut<T: Copy>(&mut self, what: &str) -> PyResult<&mut [T]> {
        let (ptr, size) = self.checked::<T>(what)?;
        if size == 0 {
            return Ok(&mut []);
        }
        // SAFETY: as in `slice`; the exporter granted write access for a PyBUF_WRITABLE view.
        Ok(unsafe { std::slice::from_raw_parts_mut(ptr as *mut T, size) })
    }

    fn checked<T>(&self, what: &str) -> PyResult<(*mut c_void, usize)> {
        let item = std::mem::size_of::<T>();
        let ptr = self.view.buf;
        if !self.len_bytes().is_multiple_of(item)
            || !(ptr as usize).is_multiple_of(std::mem::align_of::<T>())
        {
            return Err(PyValueError::new_err(format!(
                "{what} holds {} bytes, not a whole, aligned number of {item}-byte items",
                self.len_bytes()
            )));
        }
        Ok((ptr, self.len_bytes() / item))
    }
}

impl Drop for RawBuffer {
    fn drop(&mut self) {
        Python::with_gil(|_| {
            // SAFETY: the view was filled by PyObject_GetBuffer and is released exactly once.
            unsafe { ffi::PyBuffer_Release(&mut *self.view) }
        });
    }
}

/// The buffers of one pyarrow string/binary array (large or not), held for zero-copy reads.
pub struct ArrowText {
    offsets: RawBuffer,
    data: Option<RawBuffer>,
    validity: Option<RawBuffer>,
    large: bool,
    offset: usize,
    len: usize,
}

impl ArrowText {
    /// Reads `arr.type`, `arr.offset`, `len(arr)` and `arr.buffers()` of a pyarrow Array.
    pub fn from_array(arr: &Bound<'_, PyAny>) -> PyResult<Self> {
        let type_name: String = arr.getattr("type")?.str()?.extract()?;
        let large = match type_name.as_str() {
            "string" | "binary" => false,
            "large_string" | "large_binary" => true,
            other => {
                return Err(PyTypeError::new_err(format!(
                    "expected a pyarrow string, large_string, binary or large_binary array, got {other}"
                )))
            }
        };
        let buffers = arr.call_method0("buffers")?;
        let get = |i: usize, what: &str| -> PyResult<Option<RawBuffer>> {
            let b = buffers.get_item(i)?;
            if b.is_none() {
                Ok(None)
            } else {
                RawBuffer::get(&b, false, what).map(Some)
            }
        };
        let validity = get(0, "validity bitmap")?;
        let offsets = get(1, "offsets")?
            .ok_or_else(|| PyValueError::new_err("the string array has no offsets buffer"))?;
        let data = get(2, "data")?;
        Ok(ArrowText {
            offsets,
            data,
            validity,
            large,
            offset: arr.getattr("offset")?.extract()?,
            len: arr.len()?,
        })
    }

    /// A bounds-checked view of the rows.
    pub fn column(&self) -> PyResult<TextColumn<'_>> {
        let data: &[u8] = match &self.data {
            Some(d) => d.slice("data")?,
            None => &[],
        };
        let validity = match &self.validity {
            Some(v) => Some(v.slice::<u8>("validity bitmap")?),
            None => None,
        };
        let offsets = if self.large {
            let all = self.offsets.slice::<i64>("offsets")?;
            Offsets::Large(all.get(self.offset..).unwrap_or(&[]))
        } else {
            let all = self.offsets.slice::<i32>("offsets")?;
            Offsets::Small(all.get(self.offset..).unwrap_or(&[]))
        };
        TextColumn::new(offsets, data, validity, self.offset, self.len)
            .map_err(PyValueError::new_err)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
