"""Small models trained by the project on ToyWorld (see /work/shared/design/toyworld.md)."""
