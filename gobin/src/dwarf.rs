//! Struct layouts from DWARF, for binaries that still carry it. The offsets table is checked
//! against this, and this is preferred over the table when present.

use std::collections::HashMap;

use gimli::{AttributeValue, EndianSlice, LittleEndian};
use object::{Object as _, ObjectSection as _};

/// Member offsets of the requested structs: struct name → field name → byte offset.
pub type Layouts = HashMap<String, HashMap<String, u64>>;

#[derive(Debug, thiserror::Error)]
pub enum DwarfError {
    #[error("no DWARF (.debug_info) in the binary")]
    Missing,
    #[error("cannot read DWARF: {0}")]
    Read(String),
}

/// Reads the member offsets of every struct named in `wanted` that the DWARF describes.
pub fn struct_layouts(
    file: &object::read::elf::ElfFile64<'_>,
    wanted: &[&str],
) -> Result<Layouts, DwarfError> {
    if file.section_by_name(".debug_info").is_none() {
        return Err(DwarfError::Missing);
    }
    // Go compresses its DWARF (SHF_COMPRESSED or .zdebug_*); object inflates both.
    let load = |id: gimli::SectionId| -> Result<std::borrow::Cow<'_, [u8]>, DwarfError> {
        Ok(match file.section_by_name(id.name()) {
            Some(s) => s
                .uncompressed_data()
                .map_err(|e| DwarfError::Read(format!("{}: {e}", id.name())))?,
            None => std::borrow::Cow::Borrowed(&[][..]),
        })
    };
    let sections = gimli::DwarfSections::load(load)?;
    let dwarf = sections.borrow(|s| EndianSlice::new(s, LittleEndian));
    let read = |e: gimli::Error| DwarfError::Read(e.to_string());

    let mut layouts = Layouts::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next().map_err(read)? {
        let unit = dwarf.unit(header).map_err(read)?;
        let mut entries = unit.entries();
        // The struct whose members we are collecting, and its depth.
        let mut current: Option<(String, isize)> = None;
        while let Some(entry) = entries.next_dfs().map_err(read)? {
            let depth = entry.depth();
            if let Some((_, d)) = &current
                && depth <= *d
            {
                current = None;
            }
            match entry.tag() {
                gimli::DW_TAG_structure_type => {
                    let Some(name) = entry.attr_value(gimli::DW_AT_name) else {
                        continue;
                    };
                    let name = dwarf.attr_string(&unit, name).map_err(read)?;
                    let name = String::from_utf8_lossy(name.slice());
                    if wanted.contains(&name.as_ref()) && !layouts.contains_key(name.as_ref()) {
                        current = Some((name.into_owned(), depth));
                    }
                }
                gimli::DW_TAG_member => {
                    let Some((owner, d)) = &current else { continue };
                    if depth != d + 1 {
                        continue;
                    }
                    let Some(name) = entry.attr_value(gimli::DW_AT_name) else {
                        continue;
                    };
                    let name = dwarf.attr_string(&unit, name).map_err(read)?;
                    let offset = match entry.attr_value(gimli::DW_AT_data_member_location) {
                        Some(AttributeValue::Udata(v)) => v,
                        Some(AttributeValue::Data1(v)) => v.into(),
                        Some(AttributeValue::Data2(v)) => v.into(),
                        Some(AttributeValue::Data4(v)) => v.into(),
                        Some(AttributeValue::Data8(v)) => v,
                        Some(AttributeValue::Sdata(v)) if v >= 0 => v as u64,
                        _ => continue,
                    };
                    layouts
                        .entry(owner.clone())
                        .or_default()
                        .insert(String::from_utf8_lossy(name.slice()).into_owned(), offset);
                }
                _ => {}
            }
        }
    }
    Ok(layouts)
}
