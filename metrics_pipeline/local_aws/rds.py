"""RDS as AWS answers it where moto does not: DescribeDBClusters in pages of MaxRecords (20 to
100, 100 by default) with a Marker, as DescribeDBInstances already is in moto."""

from moto.core.responses import ActionResult
from moto.rds.exceptions import InvalidParameterValue
from moto.rds.responses import RDSResponse

MIN_RECORDS, MAX_RECORDS = 20, 100


def describe_db_clusters(self: RDSResponse) -> ActionResult:
    filters = {f["Name"]: f["Values"] for f in self.params.get("Filters", [])}
    clusters = list(
        self.backend.describe_db_clusters(
            db_cluster_identifier=self.params.get("DBClusterIdentifier"), filters=filters
        )
    )
    size = int(self.params.get("MaxRecords") or MAX_RECORDS)
    if not MIN_RECORDS <= size <= MAX_RECORDS:
        raise InvalidParameterValue(
            f"Invalid value {size} for MaxRecords. Must be between {MIN_RECORDS} and {MAX_RECORDS}"
        )
    marker = str(self.params.get("Marker") or "0")
    if not marker.isdigit():
        raise InvalidParameterValue(f"Invalid marker: {marker}")
    first = int(marker)
    result: dict[str, object] = {"DBClusters": clusters[first : first + size]}
    if first + size < len(clusters):
        result["Marker"] = str(first + size)
    return ActionResult(result)


def install() -> None:
    """Makes every moto RDS in this process (in-process or server) page its clusters."""
    # Patching moto's response class is the point here: mypy forbids assigning to methods.
    RDSResponse.describe_db_clusters = describe_db_clusters  # type: ignore[method-assign]
