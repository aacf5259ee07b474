"""
The Python half of the polyglot example: a plain Nameko service that calls the TypeScript `pricing`
service like any Nameko service, and dispatches `stock_low` events TypeScript handles.

    nameko run --config config.yaml inventory:Inventory
"""
from nameko.events import EventDispatcher
from nameko.extensions import DependencyProvider
from nameko.rpc import RpcProxy, rpc


class OutOfStock(Exception):
    pass


class ContextData(DependencyProvider):
    def get_dependency(self, worker_ctx):
        return worker_ctx.context_data


class Inventory(object):
    name = "inventory"

    pricing = RpcProxy("pricing")
    dispatch = EventDispatcher()
    context = ContextData()
    stock = {"apple": 10, "pear": 2}

    @rpc
    def reserve(self, sku, quantity):
        left = self.stock.get(sku, 0)
        if quantity > left:
            raise OutOfStock("only {} {} left".format(left, sku))
        price = self.pricing.quote(sku, quantity)
        self.stock[sku] = left - quantity
        if self.stock[sku] < 5:
            self.dispatch("stock_low", {"sku": sku, "left": self.stock[sku]})
        return {"sku": sku, "quantity": quantity, "price": price, "user": self.context.get("user_id")}
