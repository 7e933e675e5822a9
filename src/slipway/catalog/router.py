"""Catalog HTTP routes: thin; parsing, one service call, response shaping."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status

from slipway.catalog.models import ProductStatus
from slipway.catalog.schemas import (
    ProductCreate,
    ProductQuery,
    ProductRead,
    ProductSort,
    ProductUpdate,
    RestockRequest,
    SortOrder,
)
from slipway.catalog.service import CatalogService
from slipway.identity.deps import OptionalUser, StaffUser
from slipway.platform.db.session import SessionDep
from slipway.platform.errors import PermissionDeniedError
from slipway.platform.http_cache import CachePolicy, conditional_response
from slipway.platform.pagination import CURSOR_MAX_LENGTH, Page, cursor_codec
from slipway.platform.ratelimit.deps import RateLimit
from slipway.platform.services import ServicesDep

router = APIRouter(prefix="/products", tags=["products"])

#: Clients may reuse a product for 30 s, then revalidate cheaply with If-None-Match.
PRODUCT_CACHE = CachePolicy(max_age=30, public=True, must_revalidate=True)
_search_limit = RateLimit("search")


async def get_catalog(session: SessionDep, services: ServicesDep) -> CatalogService:
    return CatalogService(session, services)


CatalogDep = Annotated[CatalogService, Depends(get_catalog)]
#: Bounded to a signed 64-bit id: larger values are a 422, never a database overflow.
ProductId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("", response_model=Page[ProductRead], summary="List products")
async def list_products(
    request: Request,
    response: Response,
    catalog: CatalogDep,
    principal: OptionalUser,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=CURSOR_MAX_LENGTH)] = None,
    status_filter: Annotated[ProductStatus, Query(alias="status")] = ProductStatus.ACTIVE,
    min_price: Annotated[int | None, Query(ge=0, le=10**11)] = None,
    max_price: Annotated[int | None, Query(ge=0, le=10**11)] = None,
    sort: ProductSort = ProductSort.CREATED_AT,
    order: SortOrder = "desc",
    q: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> Page[ProductRead]:
    """Keyset-paginated products, filtered, sorted, optionally full-text searched."""
    if status_filter is ProductStatus.ARCHIVED and (principal is None or not principal.is_staff):
        raise PermissionDeniedError("Only staff may list archived products.")
    if q is not None:
        await _search_limit(request)
    query = ProductQuery(
        limit=limit,
        cursor=cursor,
        status=status_filter,
        min_price=min_price,
        max_price=max_price,
        sort=sort,
        order=order,
        q=q,
    )
    settings = catalog.services.settings
    page = await catalog.list_products(query, cursor_codec(settings.secret_key.get_secret_value()))
    if page.next_cursor:
        next_url = request.url.include_query_params(cursor=page.next_cursor)
        response.headers["Link"] = f'<{next_url}>; rel="next"'
    return page


@router.get(
    "/{product_id}",
    response_model=ProductRead,
    responses={304: {"description": "Not modified"}},
    summary="Get a product",
)
async def get_product(request: Request, product_id: ProductId, catalog: CatalogDep) -> Response:
    """One product, served from the shared cache, with an ETag."""
    body, hit = await catalog.get_product_bytes(product_id)
    return conditional_response(
        request, body, policy=PRODUCT_CACHE, headers={"X-Cache": "hit" if hit else "miss"}
    )


@router.post(
    "", response_model=ProductRead, status_code=status.HTTP_201_CREATED, summary="Create a product"
)
async def create_product(
    data: ProductCreate, request: Request, response: Response, catalog: CatalogDep, _: StaffUser
) -> ProductRead:
    """Staff only."""
    product = await catalog.create_product(data)
    response.headers["Location"] = str(request.url_for("get_product", product_id=product.id))
    return product


@router.patch("/{product_id}", response_model=ProductRead, summary="Update a product")
async def update_product(
    product_id: ProductId,
    data: ProductUpdate,
    catalog: CatalogDep,
    _: StaffUser,
    if_match: Annotated[str | None, Header(max_length=200)] = None,
) -> ProductRead:
    """Staff only; requires If-Match with the product's current ETag (412 when stale)."""
    return await catalog.update_product(product_id, data, if_match)


@router.post("/{product_id}/archive", response_model=ProductRead, summary="Archive a product")
async def archive_product(product_id: ProductId, catalog: CatalogDep, _: StaffUser) -> ProductRead:
    """Staff only; archived products leave public lists but stay on orders."""
    return await catalog.archive_product(product_id)


@router.post("/{product_id}/restock", response_model=ProductRead, summary="Restock a product")
async def restock_product(
    product_id: ProductId, data: RestockRequest, catalog: CatalogDep, _: StaffUser
) -> ProductRead:
    """Staff only; adds stock."""
    return await catalog.restock_product(product_id, data.quantity)
