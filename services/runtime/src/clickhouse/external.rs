//! External data: the tables a query ships in its own request body (multipart/form-data, one
//! part per table, named by the part; every ClickHouse version reads them). The dedup lookup's
//! keys, the fenced INSERT's rows and the rollup suspects travel this way (README "Delivery
//! guarantees").

/// One external table's multipart body and the boundary that delimits it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ExternalData {
    pub boundary: String,
    pub body: Vec<u8>,
}

/// A fresh boundary: always `"umkm-data-"` and 32 hex digits ([`BOUNDARY_LEN`]).
fn new_boundary() -> String {
    format!("umkm-data-{}", uuid::Uuid::new_v4().simple())
}

const BOUNDARY_LEN: usize = 42;

impl ExternalData {
    /// The body of the table `name`, built in one buffer (the data is not copied): the part's
    /// head, the data `write` appends straight after it, then the tail. The format of the data
    /// is the query's `<name>_format` parameter. In the (never seen) case that the data holds
    /// the boundary, another is drawn and written over the first in the head; every boundary
    /// has the same length.
    pub fn build<E>(
        name: &str,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<Self, E> {
        let mut boundary = new_boundary();
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        let start = body.len();
        write(&mut body)?;
        while memchr::memmem::find(&body[start..], boundary.as_bytes()).is_some() {
            boundary = new_boundary();
            body[2..2 + BOUNDARY_LEN].copy_from_slice(boundary.as_bytes());
        }
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        Ok(ExternalData { boundary, body })
    }

    /// The body of the table `name` holding `lines` (TabSeparated rows, one per line).
    pub fn lines<S: AsRef<str>>(name: &str, lines: impl IntoIterator<Item = S>) -> Self {
        let built: Result<Self, std::convert::Infallible> = Self::build(name, |body| {
            for (i, l) in lines.into_iter().enumerate() {
                if i > 0 {
                    body.push(b'\n');
                }
                body.extend_from_slice(l.as_ref().as_bytes());
            }
            Ok(())
        });
        match built {
            Ok(d) => d,
            Err(never) => match never {},
        }
    }

    /// The table's data: what lies between the part's head and its tail.
    #[cfg(test)]
    pub fn data(&self) -> &[u8] {
        let start = memchr::memmem::find(&self.body, b"\r\n\r\n").expect("head") + 4;
        let end = self.body.len() - format!("\r\n--{}--\r\n", self.boundary).len();
        &self.body[start..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boundary_never_occurs_in_the_data() {
        let data = b"\x00\x01umkm-data-\xff".to_vec();
        let d = ExternalData::build::<()>("_umkm_rows", |b| {
            b.extend_from_slice(&data);
            Ok(())
        })
        .unwrap();
        assert_eq!(d.boundary.len(), BOUNDARY_LEN);
        assert!(d.boundary.starts_with("umkm-data-"));
        let text = String::from_utf8_lossy(&d.body);
        assert!(text.starts_with(&format!("--{}\r\n", d.boundary)));
        assert!(text.ends_with(&format!("\r\n--{}--\r\n", d.boundary)));
        assert!(text.contains("name=\"_umkm_rows\"; filename=\"_umkm_rows\""));
        assert_eq!(
            memchr::memmem::find_iter(&d.body, d.boundary.as_bytes()).count(),
            2
        );
        assert_eq!(d.data(), data);
    }

    #[test]
    fn data_holding_the_boundary_gets_another_one() {
        // The data holds the boundary the head was written with.
        let mut draws = 0;
        let d = ExternalData::build::<()>("t", |b| {
            let first = b[2..2 + BOUNDARY_LEN].to_vec();
            b.extend_from_slice(&first);
            draws += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(draws, 1);
        let text = String::from_utf8_lossy(&d.body);
        assert!(text.starts_with(&format!("--{}\r\n", d.boundary)));
        assert!(text.ends_with(&format!("\r\n--{}--\r\n", d.boundary)));
        assert_eq!(
            memchr::memmem::find_iter(&d.body, d.boundary.as_bytes()).count(),
            2,
            "the boundary was redrawn: only the head and the tail hold it"
        );
    }

    #[test]
    fn lines_are_joined_by_newlines() {
        let d = ExternalData::lines("k", ["a\t1", "b\t2"]);
        assert_eq!(d.data(), b"a\t1\nb\t2");
        assert_eq!(ExternalData::lines("k", Vec::<String>::new()).data(), b"");
    }
}
