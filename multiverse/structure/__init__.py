"""Text-level Multiverse structure: parse, canonical form, sequential twin (SPEC §2, §8)."""
from multiverse.structure.errors import StructureError
from multiverse.structure.parser import parse
from multiverse.structure.serialise import canonicalize, relabel, sequential_twin, serialise
from multiverse.structure.tree import Block, Conclusion, Document, Goal, Outline, Path, Text, Think

__all__ = [
    "StructureError", "parse", "canonicalize", "relabel", "sequential_twin", "serialise",
    "Block", "Conclusion", "Document", "Goal", "Outline", "Path", "Text", "Think",
]
