import json
import random

import pytest

from dcanas.errors import GenotypeError
from dcanas.spaces.darts.genotype import (GENOTYPES, Genotype, genotype_from_dict, genotype_to_dict,
                                           genotype_to_text, load_genotype, parse_genotype, random_genotype,
                                           save_genotype)

# Exactly as printed in the DARTS repository's genotypes.py (range() concat included).
DARTS_V2_TEXT = ("DARTS_V2 = Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
                 "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
                 "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
                 "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
                 "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")
PC_DARTS_TEXT = ("Genotype(normal=[('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 0), "
                 "('dil_conv_3x3', 1), ('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), "
                 "('dil_conv_3x3', 1)], normal_concat=range(2, 6), reduce=[('sep_conv_5x5', 1), "
                 "('max_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_5x5', 2), ('sep_conv_3x3', 0), "
                 "('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2)], reduce_concat=range(2, 6))")


def test_published_text_parses_to_builtin():
    assert parse_genotype(DARTS_V2_TEXT) == GENOTYPES.get("DARTS_V2")
    assert parse_genotype(PC_DARTS_TEXT) == GENOTYPES.get("PC_DARTS")


def test_names_are_case_insensitive_and_listed():
    assert load_genotype("darts_v2") == GENOTYPES.get("DARTS_V2")
    assert {"DARTS_V1", "DARTS_V2", "PC_DARTS", "PC_DARTS_IMAGENET"} <= set(GENOTYPES.names())


@pytest.mark.parametrize("seed", range(20))
def test_text_and_json_round_trip(seed):
    g = random_genotype(random.Random(seed))
    assert parse_genotype(genotype_to_text(g)) == g
    assert genotype_from_dict(json.loads(json.dumps(genotype_to_dict(g)))) == g


def test_files_and_run_folder(tmp_path):
    g = GENOTYPES.get("PC_DARTS")
    save_genotype(g, tmp_path / "g.json")
    save_genotype(g, tmp_path / "g.txt")
    assert load_genotype(tmp_path / "g.json") == g
    assert load_genotype(str(tmp_path / "g.txt")) == g
    save_genotype(g, tmp_path / "genotype.json")
    assert load_genotype(tmp_path) == g  # a run folder holding genotype.json


@pytest.mark.parametrize("text, fault", [
    ("Genotype(normal=[('conv_9x9', 0), ('sep_conv_3x3', 1)], reduce=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)])",
     "unknown op 'conv_9x9'"),
    ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 2)], reduce=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)])",
     "takes input 2"),
    ("Genotype(normal=[('sep_conv_3x3', 0)], reduce=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)])",
     "has 1 edges"),
    ("Genotype(normal=[('none', 0), ('sep_conv_3x3', 1)], reduce=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)])",
     "unknown op 'none'"),
    ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], normal_concat=[2, 7], "
     "reduce=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)])", "normal_concat"),
    ("Genotype(normal=__import__('os'))", "only contain literals"),
    ("Genotype(normal=[", "cannot parse"),
    ("Cell(normal=[])", "must look like Genotype("),
])
def test_malformed_text_is_rejected_with_the_fault(text, fault):
    with pytest.raises(GenotypeError, match=fault.replace("(", r"\(").replace("[", r"\[")):
        parse_genotype(text)


def test_malformed_json_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GenotypeError, match="invalid JSON"):
        load_genotype(bad)
    bad.write_text(json.dumps({"normal": [["sep_conv_3x3", 0]]}))
    with pytest.raises(GenotypeError, match="'normal' and 'reduce'"):
        load_genotype(bad)


def test_unknown_name_lists_known_ones():
    with pytest.raises(GenotypeError, match="DARTS_V2"):
        load_genotype("NOT_A_GENOTYPE")


def test_genotype_is_the_darts_namedtuple():
    assert Genotype._fields == ("normal", "normal_concat", "reduce", "reduce_concat")
