"""The dashboard's own logic, apart from reading and drawing: the fleet's filters and pages."""

import pandas as pd
import pytest

from metrics_pipeline.dashboard.app import (
    FLEET_PAGE_ROWS,
    filter_fleet,
    fleet_filters,
    page_options,
)

pytestmark = pytest.mark.storage_neutral

FLEET = pd.DataFrame(
    {
        "account_id": ["111111111111", "111111111111", "222222222222"],
        "region": ["us-east-1", "eu-west-1", "us-east-1"],
        "instance_id": ["orders-db", "users-db", "orders-db"],
        "engine": ["postgres", "mysql", None],
        "tags": [{"team": "shop", "env": "prod"}, {"team": "crm"}, {}],
    }
)


def test_each_filter_offers_what_the_fleet_has() -> None:
    assert fleet_filters(FLEET) == {
        "account": ["111111111111", "222222222222"],
        "region": ["eu-west-1", "us-east-1"],
        "engine": ["mysql", "postgres"],
        "tag": ["env=prod", "team=crm", "team=shop"],
    }


@pytest.mark.parametrize(
    ("chosen", "kept"),
    [
        ({}, ["orders-db", "users-db", "orders-db"]),
        ({"account": ["222222222222"]}, ["orders-db"]),
        ({"region": ["us-east-1"], "engine": ["postgres"]}, ["orders-db"]),
        ({"tag": ["team=crm", "env=prod"]}, ["orders-db", "users-db"]),  # any of a filter's
        ({"tag": ["team=shop"], "region": ["eu-west-1"]}, []),  # every filter
        ({"account": None, "tag": []}, ["orders-db", "users-db", "orders-db"]),  # cleared
    ],
)
def test_the_fleet_keeps_the_instances_matching_every_filter(
    chosen: dict[str, list[str] | None], kept: list[str]
) -> None:
    assert list(filter_fleet(FLEET, chosen)["instance_id"]) == kept


def test_the_fleet_is_paged_by_its_rows() -> None:
    assert page_options(0) == [{"label": "1 of 1", "value": 0}]
    assert page_options(FLEET_PAGE_ROWS) == [{"label": "1 of 1", "value": 0}]
    assert [o["label"] for o in page_options(FLEET_PAGE_ROWS + 1)] == ["1 of 2", "2 of 2"]
