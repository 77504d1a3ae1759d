//! Function symbols of a Go binary, from `.symtab` when present and `.gopclntab` otherwise.
//! Both must agree exactly; the fixture tests check that on unstripped/stripped twins.

use std::collections::HashMap;

use object::{Object as _, ObjectSymbol as _, SymbolKind};
use serde::Serialize;

use crate::Function;
use crate::pclntab::{Pclntab, PclntabError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SymbolSource {
    Symtab,
    Pclntab,
}

/// Functions by exact Go symbol name, e.g. `internal/runtime/maps.(*Iter).Next`.
pub struct Symbols {
    pub source: SymbolSource,
    by_name: HashMap<String, Function>,
}

impl Symbols {
    /// `.symtab` when the binary has one, else the Go function table.
    pub fn load(file: &object::read::elf::ElfFile64<'_>) -> Result<Self, PclntabError> {
        match Self::from_symtab(file) {
            Some(s) => Ok(s),
            None => Self::from_pclntab(file),
        }
    }

    pub fn from_symtab(file: &object::read::elf::ElfFile64<'_>) -> Option<Self> {
        file.section_by_name(".symtab")?;
        let by_name = file
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.address() != 0)
            .filter_map(|s| {
                let name = s.name().ok()?.to_string();
                // A corrupted size must not wrap around the address space.
                let end = s.address().checked_add(s.size())?;
                let f = Function {
                    name: name.clone(),
                    entry: s.address(),
                    end,
                };
                Some((name, f))
            })
            .collect();
        Some(Symbols {
            source: SymbolSource::Symtab,
            by_name,
        })
    }

    pub fn from_pclntab(file: &object::read::elf::ElfFile64<'_>) -> Result<Self, PclntabError> {
        let generic =
            object::File::parse(file.data()).map_err(|e| PclntabError::Malformed(e.to_string()))?;
        let table = Pclntab::read(&generic)?;
        let by_name = table
            .functions()
            .into_iter()
            .map(|f| (f.name.clone(), f))
            .collect();
        Ok(Symbols {
            source: SymbolSource::Pclntab,
            by_name,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Function> {
        self.by_name.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}
