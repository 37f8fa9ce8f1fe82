"""The ControlNet panel's bookkeeping (codex_ui.controls): which units are sent as the request's ``controls``, how a
request changed elsewhere is shown, where the service's problems go, and the form field it comes from."""

from __future__ import annotations

from codex_core import request_schema
from codex_ui.controls import (controls_of, enabled_position, first_shown, item_properties, param_value, shows,
                               unit_problems, units_for)
from codex_ui.drafts import Drafts
from codex_ui.forms import FieldSpec, form_fields, value_of


def test_sd15s_controls_field_is_a_control_panel_with_the_items_ranges():
    schema = request_schema("sd15", "txt2img")
    controls = {spec.name: spec for spec in form_fields(schema)}["controls"]
    assert (controls.kind, controls.max_items) == ("controls", 10)
    properties = item_properties(schema, "controls")
    assert (properties["scale"]["minimum"], properties["scale"]["maximum"], properties["scale"]["default"]) == (0, 2, 1)
    assert properties["image"]["x-codex-input"] == "image" and properties["end"]["default"] == 1
    # a value the panel cannot show is a JSON box, read as JSON
    assert value_of(FieldSpec(name="controls", kind="controls", label="c"), '[{"model": "x"}]') == [{"model": "x"}]


def test_the_enabled_units_in_order_are_the_controls_with_only_what_was_set():
    units = [{"enabled": False, "image": "a.png", "model": "m"}, {"enabled": True, "image": "b.png", "scale": 0.5},
             {"enabled": True, "model": "n"}]
    assert controls_of(units) == [{"image": "b.png", "scale": 0.5}, {"model": "n"}]
    assert [enabled_position(units, slot) for slot in range(3)] == [None, 0, 1]


def test_drafted_units_are_kept_while_they_give_the_request_and_rebuilt_when_it_changed_elsewhere():
    kept = [{"enabled": False, "image": "a.png"}, {"enabled": True, "model": "m", "image": "b.png"}, {"enabled": False}]
    assert units_for([{"model": "m", "image": "b.png"}], kept, 3) == kept  # the disabled draft is kept
    edited = units_for([{"model": "x", "image": "c.png"}], kept, 3)  # the panel edited by hand: one unit per control
    assert edited == [{"enabled": True, "model": "x", "image": "c.png"}, {"enabled": False}, {"enabled": False}]
    assert units_for(None, None, 3) == [{"enabled": False}] * 3
    many = [{"model": str(index)} for index in range(5)]
    assert controls_of(units_for(many, None, 5)) == many
    assert shows(None) and shows(many) and not shows({"model": "x"}) and not shows([{"weight": 1}])


def test_clearing_the_drafts_clears_the_units_too():
    drafts = Drafts({"txt2img": {"controls": [{"model": "m"}]}})
    drafts.units["txt2img"] = [{"enabled": True, "model": "m"}]
    drafts.clear()  # an engine switch
    assert drafts == {} and drafts.units == {}


def test_the_services_problems_go_to_their_units_and_the_panel_says_where():
    problems = ["controls.1.model: Field required", "width: got 65", "controls.0.start: got 0.9: after end",
                "controls.0.image: no such image file"]
    found = unit_problems(problems)
    assert found == {"controls.0": "start: got 0.9: after end; image: no such image file",
                     "controls.1": "model: Field required", "controls": "2 controls refused: controls.1, controls.0"}
    assert unit_problems(["controls: List should have at most 10 items"]) == {
        "controls": "List should have at most 10 items"}
    assert unit_problems(["width: got 65"]) == {}
    units = [{"enabled": False}, {"enabled": True}, {"enabled": True}]
    assert first_shown(units, {"controls.1": "model: Field required"}, "controls") == 2  # the second enabled
    assert first_shown(units, {}, "controls") == 1 and first_shown([{"enabled": False}] * 3, {}, "controls") == 0


def test_a_sliders_whole_number_is_an_integer_parameter():
    assert param_value({"type": "integer"}, 50.0) == 50 and isinstance(param_value({"type": "integer"}, 50.0), int)
    assert param_value({"type": "number"}, 2.0) == 2.0 and isinstance(param_value({"type": "number"}, 2.0), float)
    assert param_value({"type": "integer"}, 50.5) == 50.5  # sent as given: the service says what is wrong
