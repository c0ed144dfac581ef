"""The synthetic tree: ranks, shares, names in the real styles, long-tailed species sizes."""

from __future__ import annotations

import numpy as np
import pytest

from bioscan_stream.partition import is_placeholder_species
from bioscan_stream.synth.taxonomy import Taxonomy, build_taxonomy


@pytest.fixture(scope="module")
def tax() -> Taxonomy:
    return build_taxonomy(50_000, seed=3)


def _record_share(tax: Taxonomy, rank: str, name: str) -> float:
    names = {"class": tax.class_names, "order": tax.order_names, "family": tax.family_names}[rank]
    index = tax.species_path()[rank]
    return float(tax.species_size[index == names.index(name)].sum() / tax.species_size.sum())


def test_rank_sizes(tax: Taxonomy) -> None:
    assert len(tax.class_names) == 10
    assert len(tax.order_names) == 55
    assert 800 <= len(tax.family_names) <= 1100  # 934 in the real release
    assert int(tax.species_size.sum()) == 50_000


def test_record_shares_follow_the_paper(tax: Taxonomy) -> None:
    assert _record_share(tax, "order", "Diptera") == pytest.approx(0.71, abs=0.04)
    assert _record_share(tax, "class", "Insecta") == pytest.approx(0.98, abs=0.015)
    assert _record_share(tax, "family", "Cecidomyiidae") == pytest.approx(0.18, abs=0.05)


def test_species_sizes_are_long_tailed(tax: Taxonomy) -> None:
    size = tax.species_size
    assert np.median(size) <= 3
    assert (size == 1).mean() > 0.3
    assert size.max() >= 50 * np.median(size)


def test_paths_are_a_tree(tax: Taxonomy) -> None:
    path = tax.species_path()
    for rank, parent in (("genus", "subfamily"), ("subfamily", "family"), ("family", "order")):
        child = path[rank]
        parents_per_child = {c: set() for c in np.unique(child).tolist()}
        for c, p in zip(child.tolist(), path[parent].tolist(), strict=True):
            parents_per_child[c].add(p)
        assert all(len(p) == 1 for p in parents_per_child.values()), rank


def test_unassigned_subfamilies_name_their_family(tax: Taxonomy) -> None:
    filler = np.flatnonzero(tax.subfamily_unassigned)
    assert len(filler)
    for s in filler.tolist():
        assert tax.subfamily_names[s] == f"unassigned {tax.family_names[tax.subfamily_family[s]]}"


def test_names_unique_and_placeholders_in_real_styles(tax: Taxonomy) -> None:
    assert len(set(tax.species_names)) == len(tax.species_names)
    assert len(set(tax.genus_names)) == len(tax.genus_names)
    genus = [tax.genus_names[g] for g in tax.species_genus.tolist()]
    assert all(s.split(" ")[0] == g for s, g in zip(tax.species_names, genus, strict=True))
    placeholder = np.array([is_placeholder_species(s, g) for s, g in zip(tax.species_names, genus, strict=True)])
    assert 0.1 < placeholder.mean() < 0.5  # share of species names; real labelled species: ~45% (small ones)
    joined = "\n".join(tax.species_names)
    for style in ("Malaise", " sp. ", "BioLep"):
        assert style in joined, style
    assert any(g[0].islower() for g in tax.genus_names)  # placeholder genera such as microMalaise01
    described = [s for s, p in zip(tax.species_names, placeholder, strict=True) if not p]
    assert all(s.split(" ")[1].islower() and s.split(" ")[1].isalpha() for s in described)


def test_deterministic_for_a_seed() -> None:
    a, b, c = build_taxonomy(3000, seed=1), build_taxonomy(3000, seed=1), build_taxonomy(3000, seed=2)
    assert a.species_names == b.species_names and np.array_equal(a.species_size, b.species_size)
    assert a.species_names != c.species_names
