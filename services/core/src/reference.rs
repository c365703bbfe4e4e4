//! Reference data shipped with the project (`schemas/reference/`): Kemendagri region codes
//! (all 38 provinces; Banten's kab/kota and kecamatan, Kepmendagri 300.2.2-2138/2025) and the
//! MCC → sector and KBLI 2020 → sector mappings (v1). The same files are loaded into ClickHouse
//! by the migrations.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::Invalid;
use crate::fields::Shared;

pub const BANTEN_CSV: &str = include_str!("../../../schemas/reference/kemendagri_banten_2025.csv");
pub const PROVINCES_CSV: &str =
    include_str!("../../../schemas/reference/kemendagri_provinces_2025.csv");
pub const MCC_SECTOR_CSV: &str = include_str!("../../../schemas/reference/mcc_sector_v1.csv");
pub const REGIONS_VERSION: &str = "kepmendagri-300.2.2-2138-2025";
pub const MCC_SECTOR_VERSION: &str = "mcc-sector-v1";
pub const KBLI_SECTOR_CSV: &str = include_str!("../../../schemas/reference/kbli_sector_v1.csv");
pub const KBLI_SECTOR_VERSION: &str = "kbli-sector-v1";
pub const BANTEN: &str = "36";
pub const UNKNOWN_SECTOR: &str = "unknown";

/// A region code checked against the reference and split into its levels.
///
/// The levels are shared with the reference ([`Shared`]): checking a Banten code allocates
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// As given, normalised to dotted form: `36.04` or `36.04.19`.
    pub code: Shared,
    pub province: Shared,
    /// `PP.KK`, empty when only a province was given (never for Banten, see `check_region`).
    pub kab_kota: Shared,
    /// `PP.KK.CC`, empty when the code is at kab/kota level.
    pub kecamatan: Shared,
    /// False for codes outside Banten, which are checked at province level only.
    pub in_reference: bool,
}

/// The region reference a service checks codes against: the shipped one
/// ([`Regions::shipped`]), or a newer list of Banten's kab/kota and kecamatan read from
/// `reference.regions_file` (docs/operations.md "Replaying after a reference-data fix").
/// Provinces are always the shipped list.
#[derive(Debug, Clone)]
pub struct Regions {
    version: String,
    /// Province code -> the same code, shared by the rows.
    provinces: HashMap<String, Shared>,
    banten: HashMap<String, (String, String)>, // code -> (name, level)
    /// Every Banten kab/kota and kecamatan code, split into its levels once.
    banten_levels: HashMap<String, Region>,
    empty: Shared,
}

impl Regions {
    /// The reference shipped with the project (`REGIONS_VERSION`).
    pub fn shipped() -> &'static Regions {
        static R: OnceLock<Regions> = OnceLock::new();
        R.get_or_init(|| {
            Regions::with_banten(REGIONS_VERSION, BANTEN_CSV)
                .expect("the shipped Banten reference parses")
        })
    }

    /// A reference whose Banten list is `csv` (the format of `kemendagri_banten_2025.csv`:
    /// `kode,nama,level` with levels `provinsi`, `kab_kota`, `kecamatan`), named `version`.
    /// The list replaces the shipped one whole, as a new decree does. Every line is checked:
    /// the code's form matches its level, it is in Banten (36), a kecamatan's kab/kota is
    /// listed, and no code repeats.
    pub fn with_banten(version: &str, csv: &str) -> Result<Regions, String> {
        if version.trim().is_empty() {
            return Err("the reference needs a version name".into());
        }
        let provinces = PROVINCES_CSV
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(','))
            .map(|(k, _name)| (k.to_string(), Shared::from(k)))
            .collect::<HashMap<_, _>>();
        let mut banten = HashMap::new();
        let mut lines = csv.lines().enumerate();
        match lines.next() {
            Some((_, h)) if h.trim() == "kode,nama,level" => {}
            other => {
                return Err(format!(
                    "line 1: expected the header kode,nama,level, found {:?}",
                    other.map(|(_, h)| h).unwrap_or_default()
                ));
            }
        }
        for (i, line) in lines {
            let n = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let f = csv_fields(line, 3).ok_or(format!("line {n}: expected kode,nama,level"))?;
            let (code, name, level) = (f[0], f[1], f[2]);
            let form_ok = match level {
                "provinsi" => code == BANTEN,
                "kab_kota" => code.len() == 5 && code.starts_with("36."),
                "kecamatan" => code.len() == 8 && code.starts_with("36."),
                _ => {
                    return Err(format!(
                        "line {n}: level {level:?} is not provinsi, kab_kota or kecamatan"
                    ));
                }
            };
            let digits_ok = code
                .split('.')
                .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()));
            // `?` would be read as a bind marker by the ClickHouse client that loads the rows.
            if !form_ok || !digits_ok || name.is_empty() || name.contains('?') {
                return Err(format!(
                    "line {n}: {code:?} is not a Banten {level} code (36, 36.KK, 36.KK.CC) with a name without `?`"
                ));
            }
            if banten
                .insert(code.to_string(), (name.to_string(), level.to_string()))
                .is_some()
            {
                return Err(format!("line {n}: {code} is listed twice"));
            }
        }
        for (code, (_, level)) in &banten {
            if level == "kecamatan" && !banten.contains_key(&code[..5]) {
                return Err(format!(
                    "kecamatan {code}: its kab/kota {} is not listed",
                    &code[..5]
                ));
            }
        }
        if !banten.values().any(|(_, l)| l == "kab_kota") {
            return Err("no kab/kota listed".into());
        }
        let empty = Shared::default();
        let banten_levels = banten
            .iter()
            .filter(|(_, (_, level))| level != "provinsi") // not a region code alone (`check`)
            .map(|(code, (_, level))| {
                let region = Region {
                    code: Shared::from(code.as_str()),
                    province: provinces[BANTEN].clone(),
                    kab_kota: Shared::from(&code[..5]),
                    kecamatan: if level == "kecamatan" {
                        Shared::from(code.as_str())
                    } else {
                        empty.clone()
                    },
                    in_reference: true,
                };
                (code.clone(), region)
            })
            .collect();
        Ok(Regions {
            version: version.to_string(),
            provinces,
            banten,
            banten_levels,
            empty,
        })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// Name and level (`provinsi`, `kab_kota`, `kecamatan`) of a Banten code.
    pub fn banten_region(&self, code: &str) -> Option<(&str, &str)> {
        self.banten.get(code).map(|(n, l)| (n.as_str(), l.as_str()))
    }

    /// Banten's codes, sorted.
    pub fn banten_codes(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.banten.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Accepts `PP.KK`, `PP.KK.CC`, or the same without dots (`PPKK`, `PPKKCC`).
    /// Banten (36) codes must be in this reference's list; other provinces are checked at
    /// province level only (the project ships Banten's kab/kota and kecamatan, not the whole
    /// country's).
    pub fn check(&self, raw: &str) -> Result<Region, Invalid> {
        let s = raw.trim();
        // The digits without dots, on the stack (this runs for every payment).
        let (mut d, mut n, mut digits_only) = ([0u8; 6], 0usize, true);
        for b in s.bytes().filter(|b| *b != b'.') {
            if !b.is_ascii_digit() || n == d.len() {
                digits_only = false;
                break;
            }
            d[n] = b;
            n += 1;
        }
        let well_formed =
            digits_only && matches!(n, 4 | 6) && (s.len() == n || s.len() == n + n / 2 - 1);
        if !well_formed {
            return Err(Invalid::new(
                "region_format",
                format!(
                    "region_code {raw:?} is not a Kemendagri kab/kota (PP.KK) or kecamatan (PP.KK.CC) code"
                ),
            ));
        }
        // Dotted form, PP.KK or PP.KK.CC, on the stack (ASCII digits and dots).
        let (mut dotted, mut len) = ([0u8; 8], 0usize);
        for (i, b) in d[..n].iter().enumerate() {
            if i == 2 || i == 4 {
                dotted[len] = b'.';
                len += 1;
            }
            dotted[len] = *b;
            len += 1;
        }
        let code = std::str::from_utf8(&dotted[..len]).expect("ASCII digits and dots");
        let province = &code[0..2];
        let Some(province_shared) = self.provinces.get(province) else {
            return Err(Invalid::new(
                "region_unknown",
                format!("region_code {raw:?}: province {province} is not a Kemendagri province"),
            ));
        };
        if province == BANTEN {
            return self.banten_levels.get(code).cloned().ok_or_else(|| {
                Invalid::new(
                    "region_unknown",
                    format!(
                        "region_code {raw:?}: {code} is not a Banten kab/kota or kecamatan in {}",
                        self.version
                    ),
                )
            });
        }
        // Outside Banten (checked at province level only): allocated, and rare.
        Ok(Region {
            code: Shared::from(code),
            province: province_shared.clone(),
            kab_kota: Shared::from(&code[0..5]),
            kecamatan: if n == 6 {
                Shared::from(code)
            } else {
                self.empty.clone()
            },
            in_reference: false,
        })
    }
}

/// Name and level of a Banten code in the shipped reference.
pub fn banten_region(code: &str) -> Option<(&'static str, &'static str)> {
    Regions::shipped().banten_region(code)
}

/// Banten's codes in the shipped reference, sorted.
pub fn banten_codes() -> impl Iterator<Item = &'static str> {
    Regions::shipped().banten_codes().into_iter()
}

fn mcc_map() -> &'static HashMap<String, String> {
    static M: OnceLock<HashMap<String, String>> = OnceLock::new();
    M.get_or_init(|| {
        MCC_SECTOR_CSV
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut it = l.split(',');
                Some((it.next()?.to_string(), it.next()?.to_string()))
            })
            .collect()
    })
}

/// Sector of an MCC per `mcc_sector_v1.csv`; `unknown` when the MCC is not mapped.
pub fn sector_for_mcc(mcc: &str) -> &'static str {
    mcc_map()
        .get(mcc)
        .map(String::as_str)
        .unwrap_or(UNKNOWN_SECTOR)
}

/// Splits a reference CSV line into `n` fields; the last may be double-quoted and hold commas.
fn csv_fields(line: &str, n: usize) -> Option<Vec<&str>> {
    let f: Vec<&str> = line.splitn(n, ',').collect();
    (f.len() == n).then(|| f.into_iter().map(|x| x.trim().trim_matches('"')).collect())
}

/// KBLI prefix (2-5 digits) → (KBLI section letter, sector).
fn kbli_map() -> &'static HashMap<String, (String, String)> {
    static M: OnceLock<HashMap<String, (String, String)>> = OnceLock::new();
    M.get_or_init(|| {
        KBLI_SECTOR_CSV
            .lines()
            .skip(1)
            .filter_map(|l| csv_fields(l, 4))
            .map(|f| (f[0].to_string(), (f[1].to_string(), f[2].to_string())))
            .collect()
    })
}

/// KBLI 2020 section letter and sector of a 5-digit KBLI code per `kbli_sector_v1.csv` (the
/// longest listed prefix wins: `10722` gula aren is `food_processing`, `13134` batik is
/// `crafts` while the rest of division 13 is `fashion`). `None` when no prefix is listed.
pub fn kbli_sector(code: &str) -> Option<(&'static str, &'static str)> {
    let m = kbli_map();
    (2..=code.len().min(5))
        .rev()
        .find_map(|n| code.get(..n).and_then(|p| m.get(p)))
        .map(|(sec, sector)| (sec.as_str(), sector.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kbli_sectors() {
        assert_eq!(kbli_sector("10722"), Some(("C", "food_processing")));
        assert_eq!(kbli_sector("13134"), Some(("C", "crafts")));
        assert_eq!(kbli_sector("13121"), Some(("C", "fashion")));
        assert_eq!(kbli_sector("56102"), Some(("I", "food_beverage")));
        assert_eq!(kbli_sector("47111"), Some(("G", "retail_food")));
        assert_eq!(kbli_sector("47854"), Some(("G", "fashion")));
        assert_eq!(kbli_sector("47999"), Some(("G", "retail_general")));
        assert_eq!(kbli_sector("96111"), Some(("S", "personal_services")));
        assert_eq!(kbli_sector("19000"), None);
        // Every listed prefix is 2-5 digits with a section letter and a sector.
        for (k, (sec, sector)) in kbli_map() {
            assert!(
                (2..=5).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_digit()),
                "{k}"
            );
            assert!(sec.len() == 1 && !sector.is_empty(), "{k}");
        }
        assert!(kbli_map().len() > 80);
    }

    #[test]
    fn banten_reference_is_complete() {
        let kab = banten_codes().filter(|c| c.len() == 5).count();
        let kec = banten_codes().filter(|c| c.len() == 8).count();
        assert_eq!((kab, kec), (8, 155));
        assert_eq!(banten_region("36.04.19"), Some(("Petir", "kecamatan")));
    }

    #[test]
    fn region_codes() {
        let check_region = |c: &str| Regions::shipped().check(c);
        let r = check_region("36.04.19").unwrap();
        assert_eq!(
            (
                r.province.as_str(),
                r.kab_kota.as_str(),
                r.kecamatan.as_str()
            ),
            ("36", "36.04", "36.04.19")
        );
        assert!(r.in_reference);
        assert_eq!(check_region("360419").unwrap().code, "36.04.19");
        assert_eq!(check_region("3674").unwrap().code, "36.74");
        assert_eq!(check_region("36.74").unwrap().kecamatan, "");
        let jakarta = check_region("31.71").unwrap();
        assert!(!jakarta.in_reference);
        assert_eq!(check_region("36.09").unwrap_err().rule, "region_unknown");
        assert_eq!(check_region("36.04.99").unwrap_err().rule, "region_unknown");
        assert_eq!(check_region("99.01").unwrap_err().rule, "region_unknown");
        for bad in ["36", "36.4.19", "3604.19", "ab.cd", "", "36.04.19.1001"] {
            assert_eq!(
                check_region(bad).unwrap_err().rule,
                "region_format",
                "{bad}"
            );
        }
    }

    #[test]
    fn a_newer_banten_list_replaces_the_shipped_one() {
        let newer = format!("{BANTEN_CSV}36.03.34,Kecamatan Baru,kecamatan\n");
        let r = Regions::with_banten("kepmendagri-test-2026", &newer).unwrap();
        assert_eq!(r.check("36.03.34").unwrap().kab_kota, "36.03");
        assert_eq!(
            r.banten_region("36.03.34"),
            Some(("Kecamatan Baru", "kecamatan"))
        );
        assert_eq!(
            r.banten_codes().len(),
            Regions::shipped().banten_codes().len() + 1
        );
        let unknown = Regions::shipped().check("36.03.34").unwrap_err();
        assert_eq!(unknown.rule, "region_unknown");
        assert!(
            unknown.message.contains(REGIONS_VERSION),
            "{}",
            unknown.message
        );
        // Outside Banten nothing changes.
        assert!(!r.check("31.71").unwrap().in_reference);
    }

    #[test]
    fn a_bad_banten_list_is_refused_with_its_line() {
        let h = "kode,nama,level\n";
        for (csv, says) in [
            ("code,name,level\n36.01,A,kab_kota\n", "header"),
            (
                &format!("{h}36.01,A,kab_kota\n36.01,B,kab_kota\n") as &str,
                "line 3: 36.01 is listed twice",
            ),
            (
                &format!("{h}36.01,A,kab_kota\n36.02.01,B,kecamatan\n"),
                "its kab/kota 36.02",
            ),
            (&format!("{h}32.01,A,kab_kota\n"), "line 2"),
            (&format!("{h}36.01,A,kota\n"), "level"),
            (&format!("{h}36.1,A,kab_kota\n"), "line 2"),
            (
                &format!("{h}36.01.01,,kecamatan\n36.01,A,kab_kota\n"),
                "line 2",
            ),
            (h, "no kab/kota"),
        ] {
            let e = Regions::with_banten("v", csv).unwrap_err();
            assert!(e.contains(says), "{csv:?}: {e}");
        }
        assert!(Regions::with_banten(" ", BANTEN_CSV).is_err());
    }

    #[test]
    fn sectors() {
        assert_eq!(sector_for_mcc("5812"), "food_beverage");
        assert_eq!(sector_for_mcc("5948"), "fashion");
        assert_eq!(sector_for_mcc("0000"), UNKNOWN_SECTOR);
    }
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Migration 0003: the regions reference (all provinces, Banten's kab/kota and kecamatan),
/// generated from the shipped CSVs. The INSERT skips rows already present, so a re-run adds
/// nothing; a new Kepmendagri version is a new migration with a new `version`.
pub fn regions_migration_sql() -> String {
    let banten = BANTEN_CSV.lines().skip(1).filter_map(|line| {
        let f: Vec<&str> = line.split(',').collect();
        (f.len() == 3).then(|| (f[0], f[1], f[2]))
    });
    format!(
        "-- GENERATED from schemas/reference/kemendagri_provinces_2025.csv and\n\
         -- kemendagri_banten_2025.csv by umkm_core::reference::regions_migration_sql (regenerate:\n\
         -- UMKM_REGEN=1 cargo test -p umkm-core reference). Do not edit by hand.\n\
         CREATE TABLE IF NOT EXISTS ${{database}}.ref_regions ${{on_cluster}}\n\
         (\n\
         \x20   version String COMMENT 'reference version: Kepmendagri decree',\n\
         \x20   code String COMMENT 'Kemendagri code: PP, PP.KK or PP.KK.CC',\n\
         \x20   name String,\n\
         \x20   level String COMMENT 'provinsi, kab_kota or kecamatan',\n\
         \x20   province_code String,\n\
         \x20   kab_kota_code String COMMENT 'PP.KK; empty for provinces',\n\
         \x20   loaded_at DateTime('UTC')\n\
         )\n\
         ENGINE = ${{replicated}}ReplacingMergeTree(loaded_at)\n\
         ORDER BY (version, code);\n\
         {}",
        regions_insert(REGIONS_VERSION, banten, "${database}")
    )
}

/// The INSERT that loads `r` into `database.ref_regions` under its version (a reference from
/// `reference.regions_file`; the shipped one is migration 0003). Rows already there are
/// skipped, so it can run at every start.
pub fn regions_insert_sql(r: &Regions, database: &str) -> String {
    let banten = r.banten_codes().into_iter().filter_map(|c| {
        let (name, level) = r.banten_region(c)?;
        Some((c, name, level))
    });
    regions_insert(r.version(), banten, database)
}

/// INSERT … SELECT of every province (shipped list) and of `banten` ((code, name, level)
/// rows; the province row itself is skipped) under `version`, skipping rows present.
fn regions_insert<'a>(
    version: &str,
    banten: impl Iterator<Item = (&'a str, &'a str, &'a str)>,
    database: &str,
) -> String {
    let mut rows: Vec<(String, String, &str, String, String)> = Vec::new();
    for line in PROVINCES_CSV.lines().skip(1) {
        if let Some((code, name)) = line.split_once(',') {
            rows.push((
                code.into(),
                name.into(),
                "provinsi",
                code.into(),
                String::new(),
            ));
        }
    }
    for (code, name, level) in banten {
        if level == "provinsi" {
            continue;
        }
        rows.push((
            code.into(),
            name.into(),
            if level == "kab_kota" {
                "kab_kota"
            } else {
                "kecamatan"
            },
            code[..2].into(),
            code[..5].to_string(),
        ));
    }
    let tuples: Vec<String> = rows
        .iter()
        .map(|(c, n, l, p, k)| {
            format!(
                "    ({}, {}, {}, {}, {})",
                sql_str(c),
                sql_str(n),
                sql_str(l),
                sql_str(p),
                sql_str(k)
            )
        })
        .collect();
    format!(
        "INSERT INTO {database}.ref_regions (version, code, name, level, province_code, kab_kota_code, loaded_at)\n\
         SELECT {ver}, tupleElement(r, 1), tupleElement(r, 2), tupleElement(r, 3), tupleElement(r, 4), tupleElement(r, 5), now()\n\
         FROM (SELECT arrayJoin([\n{rows}\n]) AS r)\n\
         WHERE ({ver}, tupleElement(r, 1)) NOT IN (SELECT version, code FROM {database}.ref_regions);\n",
        ver = sql_str(version),
        rows = tuples.join(",\n"),
    )
}

/// Migration 0004: MCC → sector (v1), generated from `mcc_sector_v1.csv` like 0003.
pub fn mcc_sector_migration_sql() -> String {
    let tuples: Vec<String> = MCC_SECTOR_CSV
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut it = l.splitn(4, ',');
            let (m, s, k, d) = (it.next()?, it.next()?, it.next()?, it.next()?);
            Some(format!(
                "    ({}, {}, {}, {})",
                sql_str(m),
                sql_str(s),
                sql_str(k),
                sql_str(d)
            ))
        })
        .collect();
    format!(
        "-- GENERATED from schemas/reference/mcc_sector_v1.csv by\n\
         -- umkm_core::reference::mcc_sector_migration_sql (regenerate: UMKM_REGEN=1 cargo test -p\n\
         -- umkm-core reference). Do not edit by hand. MCCs not listed map to sector 'unknown'.\n\
         CREATE TABLE IF NOT EXISTS ${{database}}.ref_mcc_sector ${{on_cluster}}\n\
         (\n\
         \x20   version String COMMENT 'mapping version',\n\
         \x20   mcc String COMMENT 'ISO 18245 merchant category code',\n\
         \x20   sector String COMMENT 'umkm-pulse sector (the sector column of the fact tables)',\n\
         \x20   kbli_category String COMMENT 'typical KBLI 2020 category letter',\n\
         \x20   description String,\n\
         \x20   loaded_at DateTime('UTC')\n\
         )\n\
         ENGINE = ${{replicated}}ReplacingMergeTree(loaded_at)\n\
         ORDER BY (version, mcc);\n\
         INSERT INTO ${{database}}.ref_mcc_sector (version, mcc, sector, kbli_category, description, loaded_at)\n\
         SELECT {ver}, tupleElement(r, 1), tupleElement(r, 2), tupleElement(r, 3), tupleElement(r, 4), now()\n\
         FROM (SELECT arrayJoin([\n{rows}\n]) AS r)\n\
         WHERE ({ver}, tupleElement(r, 1)) NOT IN (SELECT version, mcc FROM ${{database}}.ref_mcc_sector);\n",
        ver = sql_str(MCC_SECTOR_VERSION),
        rows = tuples.join(",\n"),
    )
}

/// Migration 0005: KBLI 2020 prefix → section and sector (v1), generated from
/// `kbli_sector_v1.csv` like 0003.
pub fn kbli_sector_migration_sql() -> String {
    let tuples: Vec<String> = KBLI_SECTOR_CSV
        .lines()
        .skip(1)
        .filter_map(|l| csv_fields(l, 4))
        .map(|f| {
            format!(
                "    ({}, {}, {}, {})",
                sql_str(f[0]),
                sql_str(f[1]),
                sql_str(f[2]),
                sql_str(f[3])
            )
        })
        .collect();
    format!(
        "-- GENERATED from schemas/reference/kbli_sector_v1.csv by\n\
         -- umkm_core::reference::kbli_sector_migration_sql (regenerate: UMKM_REGEN=1 cargo test -p\n\
         -- umkm-core reference). Do not edit by hand. A KBLI code maps by its longest listed prefix.\n\
         CREATE TABLE IF NOT EXISTS ${{database}}.ref_kbli_sector ${{on_cluster}}\n\
         (\n\
         \x20   version String COMMENT 'mapping version',\n\
         \x20   kbli_prefix String COMMENT 'KBLI 2020 code prefix, 2 (golongan pokok) to 5 (kelompok) digits',\n\
         \x20   kbli_section String COMMENT 'KBLI 2020 kategori letter A-U',\n\
         \x20   sector String COMMENT 'umkm-pulse sector (the sector column of the fact tables)',\n\
         \x20   description String,\n\
         \x20   loaded_at DateTime('UTC')\n\
         )\n\
         ENGINE = ${{replicated}}ReplacingMergeTree(loaded_at)\n\
         ORDER BY (version, kbli_prefix);\n\
         INSERT INTO ${{database}}.ref_kbli_sector (version, kbli_prefix, kbli_section, sector, description, loaded_at)\n\
         SELECT {ver}, tupleElement(r, 1), tupleElement(r, 2), tupleElement(r, 3), tupleElement(r, 4), now()\n\
         FROM (SELECT arrayJoin([\n{rows}\n]) AS r)\n\
         WHERE ({ver}, tupleElement(r, 1)) NOT IN (SELECT version, kbli_prefix FROM ${{database}}.ref_kbli_sector);\n",
        ver = sql_str(KBLI_SECTOR_VERSION),
        rows = tuples.join(",\n"),
    )
}

#[cfg(test)]
mod generated {
    use super::*;

    fn check(file: &str, want: String) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../schemas/clickhouse")
            .join(file);
        if std::env::var("UMKM_REGEN").as_deref() == Ok("1") {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{file} is out of date with the reference CSVs: run UMKM_REGEN=1 cargo test -p umkm-core reference"
        );
    }

    #[test]
    fn reference_migrations_match_the_csvs() {
        check("0003_reference_regions.sql", regions_migration_sql());
        check("0004_reference_mcc_sector.sql", mcc_sector_migration_sql());
        check(
            "0005_reference_kbli_sector.sql",
            kbli_sector_migration_sql(),
        );
        // 38 provinces + 8 kab/kota + 155 kecamatan
        assert_eq!(
            regions_migration_sql().matches("\n    ('").count(),
            38 + 8 + 155
        );
    }
}
